package blob

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCheckBuildAccess(t *testing.T) {
	c := DefaultContainers()
	ok := []GrantRequest{
		{Container: "uploads", Name: "shop/source.zip", Access: AccessRead},
		{Container: "projects", Name: "shop/logs/build.log", Access: AccessWrite},
		{Container: "projects", Name: "shop/build/result.zip", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/1.4.2/lib/app.jar", Access: AccessWrite},
	}
	for _, r := range ok {
		assert.NoError(t, CheckBuildAccess(c, "shop", r), "%+v", r)
	}
	refused := []GrantRequest{
		{Container: "uploads", Name: "bank/source.zip", Access: AccessRead},
		{Container: "uploads", Name: "shop/source.zip", Access: AccessWrite},
		{Container: "projects", Name: "shop/build/result.zip", Access: AccessRead},
		{Container: "projects", Name: "bank/build/result.zip", Access: AccessWrite},
		{Container: "projects", Name: "shop/logs/../../bank/logs/build.log", Access: AccessWrite},
		{Container: "projects", Name: "/shop/logs/build.log", Access: AccessWrite},
		{Container: "uploads", Name: "shop/logs/build.log", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/../bank/1/x", Access: AccessWrite},
		{Container: "artifacts", Name: "bank/1/x", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/1", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/..hidden/x", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/1/a\\..\\..\\x", Access: AccessWrite},
		{Container: "artifacts", Name: "shop/1/x", Access: "delete"},
		{Container: "other", Name: "shop/source.zip", Access: AccessRead},
	}
	for _, r := range refused {
		assert.Error(t, CheckBuildAccess(c, "shop", r), "%+v", r)
	}
	assert.Error(t, CheckBuildAccess(c, "..", GrantRequest{Container: "uploads", Name: "../source.zip", Access: AccessRead}))
}

func TestValidateVersionRefusesAnEscape(t *testing.T) {
	assert.NoError(t, ValidateVersion("1.4.2"))
	for _, v := range []string{"../other/1", "..", "1/2", "", "-1"} {
		assert.Error(t, ValidateVersion(v), v)
	}
}
