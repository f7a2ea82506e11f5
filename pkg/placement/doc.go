// Package placement names the node labels and taints berth places workloads
// by: which nodes are spot, which have local SSD, which have GPUs. Clouds and
// autoscalers spell them differently, so they come in presets (AKS, EKS, GKE,
// Karpenter) that a platform team picks and may override key by key. The
// admission webhooks write them into Pod specs and the scheduler plugins read
// the same keys, so both always agree.
package placement
