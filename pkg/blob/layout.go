package blob

import (
	"fmt"
	"path"
	"regexp"
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
