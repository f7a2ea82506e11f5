package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// Limits of the extender's HTTP server.
const (
	// DefaultMaxRequestBytes bounds a request body. Sent with node names
	// (nodeCacheCapable) a request is a Pod and a list of names; sent with
	// whole nodes, 5,000 nodes take some 30 MiB.
	DefaultMaxRequestBytes = 64 << 20
	// DefaultRequestTimeout bounds answering one request; kube-scheduler
	// gives an extender 5s by default (httpTimeout).
	DefaultRequestTimeout = 5 * time.Second
)

// The extender's verbs, the paths it serves them on.
const (
	VerbFilter     = "filter"
	VerbPrioritize = "prioritize"
)

// HandlerOptions tune the extender's handler.
type HandlerOptions struct {
	// MaxRequestBytes bounds a request body; 0 is DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// Timeout bounds answering a request; 0 is DefaultRequestTimeout.
	Timeout time.Duration
	// Ready reports whether the node cache has synced; until then calls
	// are answered 503. Nil is always ready.
	Ready func() bool
	// Metrics, when set, count requests and time them.
	Metrics *ExtenderMetrics
}

// Handler serves POST /filter and POST /prioritize, and GET /healthz and
// /readyz.
func (e *Extender) Handler(o HandlerOptions) http.Handler {
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultRequestTimeout
	}
	ready := func() bool { return o.Ready == nil || o.Ready() }
	mux := http.NewServeMux()
	verb := func(name string, answer func(*extenderv1.ExtenderArgs) any) {
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.serve(w, r, name, o.MaxRequestBytes, ready, answer)
		})
		h = http.TimeoutHandler(h, o.Timeout, `{"Error":"berth-extender: request timed out"}`)
		mux.Handle("/"+name, o.Metrics.instrument(name, h))
	}
	verb(VerbFilter, func(a *extenderv1.ExtenderArgs) any { return e.Filter(a) })
	verb(VerbPrioritize, func(a *extenderv1.ExtenderArgs) any { return e.Prioritize(a) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "node cache not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

// errorBody is the body of a refused request. Its one field is spelt like
// ExtenderFilterResult's, so a filter caller reads it either way.
type errorBody struct {
	Error string `json:"Error"`
}

func (e *Extender) serve(w http.ResponseWriter, r *http.Request, verb string, limit int64, ready func() bool, answer func(*extenderv1.ExtenderArgs) any) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("%s: use POST with a JSON ExtenderArgs body", r.Method)})
		return
	}
	if !ready() {
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"berth-extender: node cache not synced yet; retry"})
		return
	}
	args := &extenderv1.ExtenderArgs{}
	if err := decodeArgs(http.MaxBytesReader(w, r.Body, limit), args); err != nil {
		code := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			code = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, code, errorBody{err.Error()})
		return
	}
	if err := ValidateArgs(args); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return
	}
	res := answer(args)
	klog.FromContext(r.Context()).V(4).Info("extender answered", "verb", verb, "pod", klog.KObj(args.Pod))
	writeJSON(w, http.StatusOK, res)
}

// decodeArgs reads one JSON ExtenderArgs; the error names the field that is
// wrong where it can.
func decodeArgs(body io.Reader, args *extenderv1.ExtenderArgs) error {
	dec := json.NewDecoder(body)
	err := dec.Decode(args)
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return fmt.Errorf("body: larger than %d bytes: %w", tooBig.Limit, err)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return fmt.Errorf("%s: want a JSON %s, got %s", field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("body: not JSON at byte %d: %v", syntaxErr.Offset, err)
	default:
		return fmt.Errorf("body: want a JSON ExtenderArgs: %v", err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves h on addr until ctx ends, then shuts down gracefully. The
// server bounds how long a client may take to send headers and body and to
// read the answer.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, h)
}

// ServeListener is Serve on a listener that is already open.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(sctx)
	}()
	klog.FromContext(ctx).Info("serving", "address", ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	return <-done
}
