package config

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// LoadArgs reads PlacementArgs from a YAML or JSON file, the same fields as
// the plugin's args in a KubeSchedulerConfiguration; unknown fields are an
// error, so a misspelt key is not silently ignored. An empty path gives the
// defaults. The result is defaulted and validated.
func LoadArgs(path string) (*PlacementArgs, error) {
	a := &PlacementArgs{}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read placement args: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, a); err != nil {
			return nil, fmt.Errorf("parse placement args %s: %w", path, err)
		}
	}
	SetDefaults(a)
	if err := Validate(a); err != nil {
		return nil, fmt.Errorf("placement args %s: %w", path, err)
	}
	return a, nil
}
