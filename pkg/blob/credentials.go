package blob

import (
	"fmt"
	"strings"
)

// connectionString is the part of a storage connection string berth uses.
type connectionString struct {
	AccountName  string
	AccountKey   string
	BlobEndpoint string
}

// parseConnectionString reads an Azure storage connection string: either a
// BlobEndpoint, or an account name with DefaultEndpointsProtocol and
// EndpointSuffix, plus the account key.
func parseConnectionString(s string) (connectionString, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return connectionString{}, fmt.Errorf("connection string: %q is not key=value", k)
		}
		kv[strings.ToLower(k)] = v
	}
	cs := connectionString{AccountName: kv["accountname"], AccountKey: kv["accountkey"], BlobEndpoint: kv["blobendpoint"]}
	if cs.AccountName == "" || cs.AccountKey == "" {
		return connectionString{}, fmt.Errorf("connection string: AccountName and AccountKey are required (SAS connection strings are not supported)")
	}
	if cs.BlobEndpoint == "" {
		proto, suffix := kv["defaultendpointsprotocol"], kv["endpointsuffix"]
		if proto == "" {
			proto = "https"
		}
		if suffix == "" {
			suffix = "core.windows.net"
		}
		cs.BlobEndpoint = fmt.Sprintf("%s://%s.blob.%s", proto, cs.AccountName, suffix)
	}
	cs.BlobEndpoint = strings.TrimSuffix(cs.BlobEndpoint, "/")
	return cs, nil
}
