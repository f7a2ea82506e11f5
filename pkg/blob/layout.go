package blob

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

// The default containers, the same as the Organization API's defaults.
const (
	DefaultUploadsContainer   = "uploads"
	DefaultProjectsContainer  = "projects"
	DefaultArtifactsContainer = "artifacts"
)

// Containers names the three containers of an org's blob layout.
type Containers struct {
	Uploads   string
	Projects  string
	Artifacts string
}

// DefaultContainers are the containers an Organization gets by default.
func DefaultContainers() Containers {
	return Containers{Uploads: DefaultUploadsContainer, Projects: DefaultProjectsContainer, Artifacts: DefaultArtifactsContainer}
}

// projectPattern is what a berth.dev/project label value may hold.
var projectPattern = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// ValidateProject checks that p is a project id usable in blob names: a
// label value, and never "." or "..", which would leave the project's
// prefix once a URL is normalised.
func ValidateProject(p string) error {
	if !projectPattern.MatchString(p) {
		return fmt.Errorf("project %q is not a valid project id: use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", p)
	}
	return nil
}

// SourceName is the name of a project's source archive in the uploads
// container.
func SourceName(project string) string { return path.Join(project, "source.zip") }

// LogName is the name of a project's build log in the projects container.
func LogName(project string) string { return path.Join(project, "logs", "build.log") }

// ResultName is the name of a project's result archive in the projects
// container.
func ResultName(project string) string { return path.Join(project, "build", "result.zip") }

// ArtifactName is the name of one artifact, at rel below the artifacts dir,
// in the artifacts container.
func ArtifactName(project, version, rel string) string {
	return path.Join(project, version, rel)
}

// ValidateVersion checks that an artifacts version names one path
// segment below the project, as a project id does: `../other/1` would
// otherwise name another project's artifacts.
func ValidateVersion(v string) error {
	if !projectPattern.MatchString(v) {
		return fmt.Errorf("version %q is not valid: use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, such as 1.4.2", v)
	}
	return nil
}

// maxBlobName is the longest blob name Azure accepts.
const maxBlobName = 1024

// CheckBuildAccess says whether a build of project, in an org with
// containers c, may have access to r's blob: read its sources; write its
// log, its result, and its artifacts below {project}/{version}/. Nothing
// else, and no name that a service or a client could read as another.
func CheckBuildAccess(c Containers, project string, r GrantRequest) error {
	if err := ValidateProject(project); err != nil {
		return err
	}
	deny := func(why string) error {
		return fmt.Errorf("a build of project %q may not %s %s/%s: %s", project, r.Access, r.Container, r.Name, why)
	}
	if len(r.Name) > maxBlobName || r.Name != path.Clean(r.Name) || strings.ContainsAny(r.Name, "\\\x00") || strings.HasPrefix(r.Name, "/") {
		return deny("the name is not a clean blob path")
	}
	switch r.Access {
	case AccessRead:
		if r.Container == c.Uploads && r.Name == SourceName(project) {
			return nil
		}
		return deny(fmt.Sprintf("a build reads only its sources, %s/%s", c.Uploads, SourceName(project)))
	case AccessWrite:
		if r.Container == c.Projects && (r.Name == LogName(project) || r.Name == ResultName(project)) {
			return nil
		}
		if r.Container == c.Artifacts {
			parts := strings.Split(r.Name, "/")
			if len(parts) < 3 || parts[0] != project {
				return deny(fmt.Sprintf("artifacts go below %s/%s/{version}/", c.Artifacts, project))
			}
			if err := ValidateVersion(parts[1]); err != nil {
				return deny(err.Error())
			}
			return nil
		}
		return deny(fmt.Sprintf("a build writes only %s/%s, %s/%s and %s/%s/{version}/...",
			c.Projects, LogName(project), c.Projects, ResultName(project), c.Artifacts, project))
	}
	return fmt.Errorf("access %q is unknown; use read or write", r.Access)
}
