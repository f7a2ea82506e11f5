package blob

import (
	"context"
	"fmt"
	"time"
)

// DefaultSASExpiry is how long a read URL is valid unless told otherwise.
const DefaultSASExpiry = time.Hour

// Signer hands out read-only URLs. AzureStore is the real one.
type Signer interface {
	ReadURL(ctx context.Context, container, name string, expiry time.Time) (string, error)
}

// ReadURL returns a read-only URL of one blob of a project, such as
// build/result.zip, in the projects container, valid for ttl.
func ReadURL(ctx context.Context, s Signer, container, project, rel string, ttl time.Duration, now time.Time) (string, error) {
	if err := ValidateProject(project); err != nil {
		return "", err
	}
	if ttl <= 0 {
		ttl = DefaultSASExpiry
	}
	if ttl > 7*24*time.Hour {
		return "", fmt.Errorf("expiry %s is above 7 days, the longest a SAS may live", ttl)
	}
	if !inside(rel) || rel == "" || rel[0] == '/' {
		return "", fmt.Errorf("blob %q must be a path inside the project, such as build/result.zip", rel)
	}
	name := project + "/" + rel
	u, err := s.ReadURL(ctx, container, name, now.Add(ttl))
	if err != nil {
		return "", fmt.Errorf("read URL for %s/%s: %w", container, name, err)
	}
	return u, nil
}
