package localcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"berth.dev/berth/pkg/supervisor"
)

// StartComponent runs one of berth's binaries beside the cluster, detached,
// under a keeper: its log goes to logs/<name>.log and its pid to
// pids/<name>.pid in the cluster's folder, so Delete stops it with the rest.
func (c *Cluster) StartComponent(ctx context.Context, name, bin string, args ...string) error {
	logs := filepath.Join(c.Dir(), "logs")
	pids := filepath.Join(c.Dir(), "pids")
	for _, d := range []string{logs, pids} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	cmd := q(bin)
	for _, a := range args {
		cmd += " " + q(a)
	}
	script := fmt.Sprintf("%s >%s 2>&1 </dev/null & echo $! >%s", cmd,
		q(filepath.Join(logs, name+".log")), q(filepath.Join(pids, name+".pid")))
	if _, out, err := supervisor.Run(ctx, os.Environ(), "bash", "-c", script); err != nil {
		return fmt.Errorf("start %s: %w: %s", name, err, out)
	}
	return nil
}

// ComponentLog returns the last lines of a component's log.
func (c *Cluster) ComponentLog(name string, lines int) string {
	b, _ := os.ReadFile(filepath.Join(c.Dir(), "logs", name+".log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// WaitHTTP waits until url answers 200 OK. Certificates are not checked: the
// URL is a health endpoint on 127.0.0.1.
func WaitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitWebhookCA waits until the certificate rotator has injected its CA into
// every webhook of berth's configurations (named "berth").
func WaitWebhookCA(ctx context.Context, c client.Client, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		mut := &admissionregistrationv1.MutatingWebhookConfiguration{}
		val := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if c.Get(ctx, client.ObjectKey{Name: "berth"}, mut) != nil || c.Get(ctx, client.ObjectKey{Name: "berth"}, val) != nil {
			return false, nil
		}
		ok := len(mut.Webhooks) > 0 && len(val.Webhooks) > 0
		for _, w := range mut.Webhooks {
			ok = ok && len(w.ClientConfig.CABundle) > 0
		}
		for _, w := range val.Webhooks {
			ok = ok && len(w.ClientConfig.CABundle) > 0
		}
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the webhook CA to be injected: %w", err)
	}
	return nil
}
