// Package controllers holds berth-manager's controllers, one folder each:
// buildqueue releases queued builds in order, orgstatus keeps the quota
// ledgers clean and Organization status current. Each is a Controller with
// NewController, Name and Register, and an injected clock.
package controllers
