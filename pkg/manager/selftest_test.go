package manager

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// Without berth's webhooks, the Pod comes back as it was sent: the self
// test fails and says what is missing and where to look.
func TestSelfTestNamesWhatBerthDidNotDo(t *testing.T) {
	var out bytes.Buffer
	err := SelfTest(t.Context(), fake.NewClientBuilder().Build(), "team-a", &out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "it has no berth.dev/org label: berth's Pod webhook did not see it; is berth-manager running, and does namespace team-a belong to an Organization")
	assert.Contains(t, err.Error(), "its security context is not hardened")
	assert.Contains(t, err.Error(), "its container may escalate privileges")
	assert.Empty(t, out.String())
}
