// Package config holds the typed arguments of berth's scheduler plugins,
// their defaults (v1) and their validation.
package config
