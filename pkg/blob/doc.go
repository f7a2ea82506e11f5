// Package blob is berth's build data path on Azure Blob Storage: it fetches a
// project's source archive and unzips it safely into the build's scratch
// dir, runs the build command while keeping its log, delivers the log and
// the results, and hands out short-lived read-only URLs.
//
// Layout, for a project p (see BlobSettings in pkg/apis/berth/v1alpha1):
//
//	{uploads}/p/source.zip          the sources a build fetches
//	{projects}/p/logs/build.log     every build's log, success or not
//	{projects}/p/build/result.zip   the outputs of a successful build
//	{artifacts}/p/{version}/...     optional versioned artifacts
//
// Every transfer is streamed with bounded memory, retried with backoff and
// integrity-checked. The package is what cmd/berth-blob runs; it must not
// depend on Kubernetes libraries, so that binary stays small.
package blob
