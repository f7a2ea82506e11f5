// Package testutil holds fixture builders for berth's tests: labelled Pods,
// Jobs, Namespaces and Organizations, built fluently and finished with Obj().
//
//	pod := testutil.Pod("ws-1").Namespace("team-a").Class("workspace").User("ana").Obj()
package testutil
