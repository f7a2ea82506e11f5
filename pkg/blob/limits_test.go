package blob

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestUnzipLimitsDefault(t *testing.T) {
	l := Limits{}.withDefaults()
	assert.Equal(t, DefaultLimits(), l)
}
