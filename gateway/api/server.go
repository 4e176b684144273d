package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mulegate/mulegate/gateway"
	"go.uber.org/zap"
)

// Options are what a Server is built from.
type Options struct {
	// Node is the running node the API serves.
	Node *gateway.Node
	// Token is the bearer token every route but /healthz requires. It must
	// not be empty: see LoadOrCreateToken.
	Token  string
	Logger *zap.Logger
	// KeepAlive is how often an idle delivery stream sends a comment line,
	// so that proxies and clients see it is alive; 0 means 15s.
	KeepAlive time.Duration
}

// Server is the API of one node.
type Server struct {
	node      *gateway.Node
	token     []byte
	log       *zap.Logger
	keepAlive time.Duration
	metrics   *apiMetrics
	handler   http.Handler
	http      *http.Server
	// closing is closed when Shutdown begins: delivery streams end then,
	// while uploads under way are left to finish.
	closing chan struct{}
}

// New builds the API of opts.Node and registers its metrics on the node's
// registry.
func New(opts Options) (*Server, error) {
	if opts.Node == nil {
		return nil, errors.New("api: no node")
	}
	if len(opts.Token) < 16 {
		return nil, errors.New("api: the token must be at least 16 characters")
	}
	s := &Server{
		node: opts.Node, token: []byte(opts.Token), log: opts.Logger, keepAlive: opts.KeepAlive,
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.keepAlive <= 0 {
		s.keepAlive = 15 * time.Second
	}
	var err error
	if s.metrics, err = newAPIMetrics(opts.Node.MetricsRegistry()); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	s.closing = make(chan struct{})
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	var once sync.Once
	s.http.RegisterOnShutdown(func() { once.Do(func() { close(s.closing) }) })
	return s, nil
}

// route is one API route: its method and pattern, its name as a metric
// label, whether it needs the token, and its handler.
type route struct {
	pattern string
	name    string
	open    bool
	h       http.HandlerFunc
}

func (s *Server) routeTable() []route {
	return []route{
		{"GET /healthz", "healthz", true, s.healthz},
		{"GET /readyz", "readyz", false, s.readyz},
		{"GET /metrics", "metrics", false, s.node.MetricsHandler().ServeHTTP},
		{"GET /v1/status", "status", false, s.status},
		{"GET /v1/peers", "peers", false, s.peers},
		{"GET /v1/bundles", "bundles", false, s.bundles},
		{"POST /v1/bundles", "send", false, s.send},
		{"GET /v1/bundles/{id}", "bundle", false, s.bundle},
		{"GET /v1/bundles/{id}/payload", "payload", false, s.payload},
		{"GET /v1/endpoints", "endpoints", false, s.endpoints},
		{"POST /v1/endpoints", "register", false, s.register},
		{"GET /v1/deliveries", "deliveries", false, s.deliveries},
		{"GET /v1/deliveries/stream", "stream", false, s.stream},
		{"POST /v1/deliveries/{id}/ack", "ack", false, s.ack},
		{"GET /v1/adapters", "adapters", false, s.adapters},
		{"POST /v1/adapters/{name}/check", "adapter_check", false, s.adapterCheck},
	}
}

// Routes lists the method and pattern of every route, for documentation
// and tests.
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.routeTable() {
		out = append(out, r.pattern)
	}
	return out
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routeTable() {
		h := http.Handler(r.h)
		if !r.open {
			h = s.authenticate(h)
		}
		mux.Handle(r.pattern, s.metrics.instrument(r.name, h))
	}
	// Anything else: a JSON 404 (or 405) rather than the mux's text, after
	// authentication so that the API's shape is not probed without a token.
	mux.Handle("/", s.metrics.instrument("other", s.authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range s.routeTable() {
			if _, path, _ := strings.Cut(rt.pattern, " "); path == r.URL.Path {
				writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "", fmt.Sprintf("%s does not take %s", r.URL.Path, r.Method))
				return
			}
		}
		writeError(w, http.StatusNotFound, "not_found", "", fmt.Sprintf("no route %s %s; see openapi.yaml", r.Method, r.URL.Path))
	}))))
	return mux
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

// authenticate requires "Authorization: Bearer TOKEN".
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(h, " ")
		switch {
		case h == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="mulegate"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "", "missing Authorization header: send \"Authorization: Bearer TOKEN\" with the token in DATA_DIR/"+TokenFile)
		case !ok || !strings.EqualFold(scheme, "Bearer"):
			w.Header().Set("WWW-Authenticate", `Bearer realm="mulegate"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "", "the Authorization header must be \"Bearer TOKEN\"")
		case subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), s.token) != 1:
			w.Header().Set("WWW-Authenticate", `Bearer realm="mulegate", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "", "wrong API token: use the one in DATA_DIR/"+TokenFile+" of this node")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// Listen opens addr: host:port for TCP, or unix:/path for a Unix socket
// (a stale socket file is replaced; the socket is made private to the
// user).
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" {
			return nil, fmt.Errorf("api.listen %q: want unix:/path/to/socket", addr)
		}
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
			// A socket nobody answers on is left over from a crash.
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("api.listen %s: another process is serving on this socket", addr)
			}
			_ = os.Remove(path)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("api.listen %s: %w", addr, err)
		}
		if err := os.Chmod(path, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("api.listen %s: %w", addr, err)
		}
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api.listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves the API on ln until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests and waits, until ctx ends, for those
// under way; then it closes whatever is left (delivery streams, uploads).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.http.Close())
	}
	return err
}
