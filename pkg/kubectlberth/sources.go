package kubectlberth

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"

	"berth.dev/berth/pkg/blob"
)

// IgnoreFiles are read in every folder of the sources, in this order: a
// pattern of .berthignore wins over one of .gitignore, and a deeper
// folder's over its parent's, as git reads them.
var IgnoreFiles = []string{".gitignore", ".berthignore"}

// sources decides what of a developer's folder goes into source.zip.
type sources struct {
	root     string // as given
	realRoot string // with symlinks resolved
	patterns []gitignore.Pattern
}

// SourceFilter returns what of the folder root is zipped as a project's
// sources: everything but .git and what the ignore files name. A symlink
// is kept as a link when it leads to somewhere inside root; one that
// leads outside, or is absolute, is an error, since the build would see
// another tree than the developer's.
func SourceFilter(root string) (blob.Keep, error) {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	s := &sources{root: root, realRoot: real}
	if err := s.readIgnores(""); err != nil {
		return nil, err
	}
	return s.keep, nil
}

func (s *sources) keep(rel string, d fs.DirEntry) (bool, error) {
	if d.IsDir() && d.Name() == ".git" {
		return false, nil
	}
	if gitignore.NewMatcher(s.patterns).Match(strings.Split(rel, "/"), d.IsDir()) {
		return false, nil
	}
	switch {
	case d.IsDir():
		return true, s.readIgnores(rel)
	case d.Type()&fs.ModeSymlink != 0:
		return true, s.checkSymlink(rel)
	}
	return true, nil
}

// readIgnores adds the patterns of the ignore files in the folder rel.
func (s *sources) readIgnores(rel string) error {
	var domain []string
	if rel != "" {
		domain = strings.Split(rel, "/")
	}
	for _, name := range IgnoreFiles {
		f, err := os.Open(filepath.Join(s.root, filepath.FromSlash(rel), name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			s.patterns = append(s.patterns, gitignore.ParsePattern(line, domain))
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
	return nil
}

// checkSymlink refuses a link that leads out of the sources, by its
// target's text or, when the target exists, by where it resolves.
func (s *sources) checkSymlink(rel string) error {
	p := filepath.Join(s.root, filepath.FromSlash(rel))
	target, err := os.Readlink(p)
	if err != nil {
		return err
	}
	outside := func(where string) error {
		return fmt.Errorf("%s is a symlink to %q, %s: kubectl berth never follows a link out of the folder it builds; copy what it points at into the folder, or name %s in .berthignore",
			p, target, where, rel)
	}
	if filepath.IsAbs(target) {
		return outside("an absolute path")
	}
	if !within(s.root, filepath.Join(filepath.Dir(p), target)) {
		return outside("outside " + s.root)
	}
	if resolved, err := filepath.EvalSymlinks(p); err == nil && !within(s.realRoot, resolved) {
		return outside("which resolves to " + resolved + ", outside " + s.root)
	}
	return nil
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	r, err := filepath.Rel(root, p)
	return err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}
