// Package quota keeps each org's workspace and GPU quota exact across any
// number of webhook replicas.
//
// Like the ResourceQuota admission plugin, it charges usage at admission with
// optimistic concurrency: every org has a ledger object (a ConfigMap in
// berth's namespace) listing the Pods it admitted by UID, and a Pod is admitted only
// by a write of the ledger conditioned on the version the decision read. Two
// replicas deciding at once cannot both win; the loser reads again and
// decides again. Entries leave the ledger when their Pod finishes, is deleted,
// or never came to exist.
package quota
