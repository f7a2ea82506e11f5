package v1alpha1

import (
	"fmt"
	"time"
)

// UsageReport is the reply of berth-meter's usage API (GET /v1/usage): one
// org's usage between Since and Until, summed by one dimension.
// +kubebuilder:object:generate=false
type UsageReport struct {
	Org    string       `json:"org"`
	By     string       `json:"by"`
	Since  time.Time    `json:"since"`
	Until  time.Time    `json:"until"`
	Totals []UsageTotal `json:"totals"`
}

// UsageTotal is the usage of one value of a UsageReport's dimension.
// +kubebuilder:object:generate=false
type UsageTotal struct {
	Key                 string  `json:"key"`
	RunningSeconds      float64 `json:"runningSeconds"`
	CPUCoreSeconds      float64 `json:"cpuCoreSeconds"`
	MemoryGiBSeconds    float64 `json:"memoryGiBSeconds"`
	GPUSeconds          float64 `json:"gpuSeconds"`
	ScratchGiBHours     float64 `json:"scratchGiBHours"`
	VolumeGiBHours      float64 `json:"volumeGiBHours"`
	PromptTokens        int64   `json:"promptTokens"`
	GenerationTokens    int64   `json:"generationTokens"`
	CostDollars         float64 `json:"costDollars"`
	SpotCostDollars     float64 `json:"spotCostDollars"`
	OnDemandCostDollars float64 `json:"onDemandCostDollars"`
}

// AuditReport is the reply of berth-meter's audit check (GET
// /v1/audit/verify): how much of an org's audit chain holds, from its
// first row.
// +kubebuilder:object:generate=false
type AuditReport struct {
	Org string `json:"org"`
	// Rows counts the rows that verified, from the first.
	Rows int64 `json:"rows"`
	// HeadSeq and HeadHash (hex) are the last verified row's: keep them
	// where the database's administrators cannot write, to show later that
	// no rows were cut from the chain's end.
	HeadSeq  int64  `json:"headSeq"`
	HeadHash string `json:"headHash"`
	// Broken names the first row that does not hold; absent when all do.
	Broken *AuditBreak `json:"broken,omitempty"`
}

// AuditBreak is where an audit chain stops holding.
// +kubebuilder:object:generate=false
type AuditBreak struct {
	Seq int64  `json:"seq"`
	Why string `json:"why"`
}

// String is the report in one line, as berth-meter audit verify and
// kubectl berth audit verify print it.
func (r AuditReport) String() string {
	if b := r.Broken; b != nil {
		return fmt.Sprintf("org %s: chain broken at row %d: %s (%d rows before it verified)", r.Org, b.Seq, b.Why, r.Rows)
	}
	return fmt.Sprintf("org %s: %d rows verified; head row %d, hash %s", r.Org, r.Rows, r.HeadSeq, r.HeadHash)
}

// WorkspaceCosts is the reply of berth-meter's cost API (GET
// /v1/namespaces/{ns}/costs): what each running workspace of the namespace
// costs an hour now, by the last interval metered.
// +kubebuilder:object:generate=false
type WorkspaceCosts struct {
	Namespace  string          `json:"namespace"`
	Workspaces []WorkspaceCost `json:"workspaces"`
}

// WorkspaceCost is one running workspace's cost now: its node's hourly
// price times its share of the node.
// +kubebuilder:object:generate=false
type WorkspaceCost struct {
	Name           string  `json:"name"`
	DollarsPerHour float64 `json:"dollarsPerHour"`
	Spot           bool    `json:"spot"`
}
