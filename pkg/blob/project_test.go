package blob

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProjectClientAsksForTheProjectsThreeBlobsOnly(t *testing.T) {
	var paths []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.Method+" "+r.URL.Path)
		if r.URL.Path == ProjectPath("team-a", "shop", ProjectLog) {
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(GrantError{Error: "no"})
			return
		}
		_ = json.NewEncoder(w).Encode(Grant{URL: "https://acct/c/" + r.URL.Path})
	}))
	defer srv.Close()
	c := &ProjectClient{ManagerURL: srv.URL + "/", Namespace: "team-a", Project: "shop", HTTP: srv.Client()}

	g, err := c.Grant(t.Context(), GrantRequest{Container: "uploads", Name: SourceName("shop"), Access: AccessWrite})
	require.NoError(t, err)
	assert.Equal(t, "https://acct/c//v1/namespaces/team-a/projects/shop/source", g.URL)
	_, err = c.Grant(t.Context(), GrantRequest{Container: "projects", Name: ResultName("shop"), Access: AccessRead})
	require.NoError(t, err)
	_, err = c.Grant(t.Context(), GrantRequest{Container: "projects", Name: LogName("shop"), Access: AccessRead})
	assert.ErrorContains(t, err, "403 Forbidden: no")
	assert.True(t, IsPermanent(err))

	for _, req := range []GrantRequest{
		{Container: "uploads", Name: SourceName("shop"), Access: AccessRead},
		{Container: "projects", Name: ResultName("shop"), Access: AccessWrite},
		{Container: "uploads", Name: SourceName("bank"), Access: AccessWrite},
		{Container: "artifacts", Name: "shop/1/app.jar", Access: AccessWrite},
	} {
		_, err := c.Grant(t.Context(), req)
		assert.ErrorContains(t, err, "the project API has no", "%+v", req)
		assert.True(t, IsPermanent(err))
	}
	assert.Equal(t, []string{
		"POST /v1/namespaces/team-a/projects/shop/source",
		"POST /v1/namespaces/team-a/projects/shop/result",
		"POST /v1/namespaces/team-a/projects/shop/log",
	}, paths)
}
