// Package metering turns the lifetimes of berth's Pods into usage rows: one
// row per Pod per fixed interval, holding that interval's absolute amounts,
// and writes them to PostgreSQL so that writing a row again never changes a
// total.
package metering

import (
	"fmt"
	"math"
	"time"

	"sigs.k8s.io/yaml"
)

// DefaultInterval is the length of one usage interval.
const DefaultInterval = time.Minute

// Pod is what the meter knows of one labelled Pod: whose it is, where it
// runs, what it asks for and when it ran.
type Pod struct {
	UID             string
	Namespace, Name string
	// Org comes from the Pod's namespace, never from the Pod's labels.
	Org, Class               string
	User, Workspace, Project string
	Node, Pool               string
	Spot                     bool
	// Start is when the Pod began running. End is when it stopped; zero
	// while it still runs.
	Start, End time.Time
	// Requests: cores, GiB, GPUs, and GiB of scratch (ephemeral storage).
	CPU, MemoryGiB, GPU, ScratchGiB float64
	// VolumeGiB is the requested size of the Pod's PersistentVolumeClaims.
	VolumeGiB float64
	// NodeShare is the part of its node the Pod's requests take, 0 to 1,
	// and NodePrice the node's price in dollars an hour.
	NodeShare, NodePrice float64
	// Stopped marks a stopped workspace's claims, metered as a Pod of
	// their own: only VolumeGiB is charged, and no running time.
	Stopped bool
	// Alloc is the node's allocatable cores, GiB and GPUs: a measured use
	// above the requests takes a larger share of the node. Zero when the
	// node is not known.
	AllocCPU, AllocMemoryGiB, AllocGPU float64
}

// Usage is what a Pod was measured to use during an interval: the largest
// sample of cores and GiB. Measured is false when no sample was taken;
// requests alone are charged then.
type Usage struct {
	CPU, MemoryGiB float64
	Measured       bool
	// Tokens an inference Pod's vLLM counted in the interval, and its
	// counters at the interval's last scrape (nil when none was taken).
	PromptTokens, GenerationTokens   int64
	PromptCounter, GenerationCounter *float64
}

// Row is one usage interval of one Pod: the absolute amounts of that
// interval, so that writing it again changes nothing.
type Row struct {
	UID             string
	IntervalStart   time.Time
	IntervalSeconds int32
	Org, Namespace  string
	Name, Class     string
	User, Workspace string
	Project, Node   string
	Pool            string
	Spot            bool
	// RunningSeconds is how much of the interval the Pod ran.
	RunningSeconds   float64
	CPUCoreSeconds   float64
	MemoryGiBSeconds float64
	GPUSeconds       float64
	ScratchGiBHours  float64
	VolumeGiBHours   float64
	PromptTokens     int64
	GenerationTokens int64
	CostDollars      float64
	// Final is set on the rows of a Pod that has ended: they no longer
	// change, and no later write changes them.
	Final bool
	// CPUUsedCores and MemoryUsedGiB are the use measured in the interval;
	// nil when none was.
	CPUUsedCores, MemoryUsedGiB *float64
	// NodeShare is the share of the node charged (requests or measured
	// use, whichever is larger) and NodePrice the node's hourly price.
	NodeShare, NodePrice float64
	// PromptCounter and GenerationCounter are an inference Pod's vLLM
	// counters at the interval's last scrape; nil when none was taken.
	PromptCounter, GenerationCounter *float64
}

// Intervals returns p's rows for the intervals of length step (starting at
// multiples of step, as time.Truncate gives them) that overlap both [from, to) and the time p ran. use gives
// the measured use in the interval starting at its argument; nil charges
// requests only. CPU and memory are charged as max(request, use). The rows
// of a Pod that has ended, up to its end, are final.
func Intervals(p Pod, from, to time.Time, step time.Duration, use func(start time.Time) Usage) []Row {
	runFrom, runTo := later(p.Start, from), to
	if !p.End.IsZero() && p.End.Before(runTo) {
		runTo = p.End
	}
	if p.Start.IsZero() || !runFrom.Before(runTo) {
		return lateTokens(p, to, step, use)
	}
	var rows []Row
	for start := runFrom.Truncate(step); start.Before(runTo); start = start.Add(step) {
		end := start.Add(step)
		secs := earlier(end, runTo).Sub(later(start, runFrom)).Seconds()
		if secs <= 0 {
			continue
		}
		var u Usage
		if use != nil {
			u = use(start)
		}
		share := p.NodeShare
		if u.Measured && (p.AllocCPU > 0 || p.AllocMemoryGiB > 0) {
			share = math.Max(share, NodeShare(math.Max(p.CPU, u.CPU), math.Max(p.MemoryGiB, u.MemoryGiB), p.GPU, p.AllocCPU, p.AllocMemoryGiB, p.AllocGPU))
		}
		row := Row{
			UID: p.UID, IntervalStart: start, IntervalSeconds: int32(step / time.Second),
			Org: p.Org, Namespace: p.Namespace, Name: p.Name, Class: p.Class,
			User: p.User, Workspace: p.Workspace, Project: p.Project,
			Node: p.Node, Pool: p.Pool, Spot: p.Spot,
			RunningSeconds:   secs,
			CPUCoreSeconds:   math.Max(p.CPU, u.CPU) * secs,
			MemoryGiBSeconds: math.Max(p.MemoryGiB, u.MemoryGiB) * secs,
			GPUSeconds:       p.GPU * secs,
			ScratchGiBHours:  p.ScratchGiB * secs / 3600,
			VolumeGiBHours:   p.VolumeGiB * secs / 3600,
			CostDollars:      p.NodePrice * share * secs / 3600,
			// A row is final once the Pod has ended within what it covers.
			Final:     !p.End.IsZero() && !to.Before(earlier(end, p.End)),
			NodeShare: share, NodePrice: p.NodePrice,
		}
		if u.Measured {
			row.CPUUsedCores, row.MemoryUsedGiB = &u.CPU, &u.MemoryGiB
		}
		row.PromptTokens, row.GenerationTokens = u.PromptTokens, u.GenerationTokens
		row.PromptCounter, row.GenerationCounter = u.PromptCounter, u.GenerationCounter
		if p.Stopped {
			row.RunningSeconds = 0
		}
		rows = append(rows, row)
	}
	return append(rows, lateTokens(p, to, step, use)...)
}

// lateTokens returns the row of an ended Pod's tokens counted past its end
// (its delete is known to the second, a scrape to the moment): they stay,
// in a row that charges nothing else.
func lateTokens(p Pod, to time.Time, step time.Duration, use func(time.Time) Usage) []Row {
	if p.End.IsZero() || to.Before(p.End) || use == nil || p.Stopped {
		return nil
	}
	late := p.End.Truncate(step)
	if late.Before(p.End) {
		late = late.Add(step)
	}
	u := use(late)
	if u.PromptTokens == 0 && u.GenerationTokens == 0 {
		return nil
	}
	return []Row{{
		UID: p.UID, IntervalStart: late, IntervalSeconds: int32(step / time.Second),
		Org: p.Org, Namespace: p.Namespace, Name: p.Name, Class: p.Class,
		User: p.User, Workspace: p.Workspace, Project: p.Project,
		Node: p.Node, Pool: p.Pool, Spot: p.Spot, NodePrice: p.NodePrice, Final: true,
		PromptTokens: u.PromptTokens, GenerationTokens: u.GenerationTokens,
		PromptCounter: u.PromptCounter, GenerationCounter: u.GenerationCounter,
	}}
}

// NodeShare is the part of a node a Pod is charged for: the largest of its
// CPU, memory and GPU requests as parts of the node's allocatable. A Pod
// that asks for all of a node's GPUs pays for the node, whatever its CPU.
func NodeShare(cpu, memGiB, gpu, allocCPU, allocMemGiB, allocGPU float64) float64 {
	share := 0.0
	for _, f := range [][2]float64{{cpu, allocCPU}, {memGiB, allocMemGiB}, {gpu, allocGPU}} {
		if f[1] > 0 {
			share = math.Max(share, f[0]/f[1])
		}
	}
	return math.Min(share, 1)
}

// Price is a node's hourly price in US dollars, on demand and as spot.
type Price struct {
	OnDemand float64 `json:"onDemand,omitempty"`
	Spot     float64 `json:"spot,omitempty"`
}

// Prices are the hourly node prices of each pool, by pool name.
type Prices map[string]Price

// ParsePrices reads pool prices in the form the local cluster's pools file
// uses: a list of pools, each with a name and a price. Other fields of a
// pool are ignored, so the pools file itself can be given.
//
//	pools:
//	- name: spot-ssd
//	  price: {onDemand: 0.77, spot: 0.15}
func ParsePrices(data []byte) (Prices, error) {
	var f struct {
		Pools []struct {
			Name  string `json:"name"`
			Price Price  `json:"price"`
		} `json:"pools"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse prices: %w", err)
	}
	out := Prices{}
	for i, p := range f.Pools {
		if p.Name == "" {
			return nil, fmt.Errorf("pools[%d].name is empty; give every pool a name", i)
		}
		if _, dup := out[p.Name]; dup {
			return nil, fmt.Errorf("pools[%d].name %q is used twice; pool names must be unique", i, p.Name)
		}
		if p.Price.OnDemand < 0 || p.Price.Spot < 0 {
			return nil, fmt.Errorf("pools[%d].price of %q is negative; use US dollars an hour, such as 1.25", i, p.Name)
		}
		out[p.Name] = p.Price
	}
	return out, nil
}

// Hourly is a node's price in pool, as spot or on demand; 0 for a pool
// without a price.
func (p Prices) Hourly(pool string, spot bool) float64 {
	if spot {
		return p[pool].Spot
	}
	return p[pool].OnDemand
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
