// Package blobtest holds Fake, an in-memory blob store that implements
// blob.Source, blob.Sink and blob.Signer for unit tests, with hooks that
// inject failures and counters of the calls made.
//
// It is a package of its own so that the berth-blob binary, which links
// package blob, never carries it. Integration tests use the real store
// against Azurite instead.
package blobtest
