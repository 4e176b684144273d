package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/mulegate/mulegate/plugins"
)

// instance supervises one adapter and is the plugins.Adapter the node
// holds for it: each call goes to whichever process is current.
type instance struct {
	m    *Manager
	name string
	log  *zap.Logger

	ctx    context.Context // cancelled by shutdown
	cancel context.CancelFunc
	done   chan struct{} // closed when supervise returns

	mu      sync.Mutex
	spec    Spec
	cur     *proc
	st      Status
	retryAt time.Time
	stopped bool
}

var _ plugins.Adapter = (*instance)(nil)

func newInstance(m *Manager, spec Spec) *instance {
	ctx, cancel := context.WithCancel(context.Background())
	source := "builtin:" + spec.Builtin
	if spec.Path != "" {
		source = spec.Path
	}
	return &instance{
		m:      m,
		name:   spec.Name,
		log:    m.log.With(zap.String("adapter", spec.Name)),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		spec:   spec,
		st:     Status{Name: spec.Name, Source: source},
	}
}

// start runs the supervisor and waits for the first launch.
func (in *instance) start(ctx context.Context) error {
	first := make(chan error, 1)
	go in.supervise(ctx, first)
	select {
	case err := <-first:
		if err != nil {
			in.cancel()
			<-in.done
		}
		return err
	case <-ctx.Done():
		in.shutdown()
		return fmt.Errorf("adapter %q: start: %w", in.name, ctx.Err())
	}
}

// supervise launches the adapter, polls its Check, and relaunches it when
// it dies, until shutdown.
func (in *instance) supervise(startCtx context.Context, first chan<- error) {
	// The kernel's parent-death signal, which kills the adapter if the node
	// dies, fires when the *thread* that forked the adapter exits, not the
	// process. Go may retire threads; a locked one lives exactly as long as
	// this goroutine, and every launch of this adapter forks from here.
	runtime.LockOSThread()
	defer close(in.done)

	launchCtx, stopLaunch := mergeCancel(in.ctx, startCtx)
	p, err := in.launch(launchCtx)
	stopLaunch()
	if err != nil {
		first <- err
		return
	}
	in.log.Info("adapter started", zap.Int("pid", p.pid), zap.String("type", p.desc.Name), zap.String("version", p.desc.Version))
	in.setRunning(p)
	first <- nil

	bo := backoff{initial: in.m.opts.Backoff.Initial, max: in.m.opts.Backoff.Max}
	for {
		why := in.watch(p)
		if in.ctx.Err() != nil {
			in.kill(p)
			in.setDown(nil, time.Time{})
			return
		}
		// A process that ran for a while earns a fresh backoff; one that
		// dies as soon as it starts backs off further each time.
		if time.Since(p.started) > bo.max {
			bo.reset()
		}
		p.release()
		for {
			delay := bo.next()
			in.setDown(why, time.Now().Add(delay))
			in.log.Warn("adapter is down; restarting after a delay", zap.Error(why), zap.Duration("delay", delay), zap.Int("restarts", in.status().Restarts))
			t := time.NewTimer(delay)
			select {
			case <-in.ctx.Done():
				t.Stop()
				in.setDown(nil, time.Time{})
				return
			case <-t.C:
			}
			in.countRestart()
			p, why = in.launch(in.ctx)
			if why == nil {
				break
			}
			if in.ctx.Err() != nil {
				in.setDown(nil, time.Time{})
				return
			}
		}
		in.log.Info("adapter restarted", zap.Int("pid", p.pid), zap.Int("restarts", in.status().Restarts))
		in.setRunning(p)
	}
}

// watch polls Check until the process exits or shutdown, and returns why
// the process is gone. A process that stops answering Check at all is
// killed, since a hung adapter is as useless as a dead one.
func (in *instance) watch(p *proc) error {
	const unresponsiveLimit = 3
	t := time.NewTicker(in.m.opts.CheckInterval)
	defer t.Stop()
	unresponsive := 0
	check := func() {
		err := in.check(p)
		var ue *unresponsiveError
		if errors.As(err, &ue) {
			unresponsive++
		} else {
			unresponsive = 0
		}
		if unresponsive >= unresponsiveLimit {
			in.log.Error("adapter stopped answering; killing it", zap.Error(err))
			p.killGroup()
		}
	}
	check()
	for {
		select {
		case <-in.ctx.Done():
			return nil
		case <-p.exited:
			return fmt.Errorf("adapter process %d exited", p.pid)
		case <-t.C:
			check()
		}
	}
}

type unresponsiveError struct{ err error }

func (e *unresponsiveError) Error() string { return e.err.Error() }
func (e *unresponsiveError) Unwrap() error { return e.err }

func (in *instance) check(p *proc) error {
	ctx, cancel := context.WithTimeout(in.ctx, in.m.opts.CheckTimeout)
	defer cancel()
	err := p.ad.Check(ctx)
	if in.ctx.Err() != nil {
		return nil
	}
	if err != nil && (errors.Is(err, plugins.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)) {
		err = &unresponsiveError{err}
	}
	in.mu.Lock()
	was := in.st.Reachable
	in.st.Reachable = err == nil
	in.st.LastCheck = time.Now()
	if err != nil {
		in.st.LastError, in.st.LastErrorAt = "check: "+err.Error(), in.st.LastCheck
	}
	st := in.st
	in.mu.Unlock()
	if was != st.Reachable {
		if st.Reachable {
			in.log.Info("adapter's service is reachable")
		} else {
			in.log.Warn("adapter's service is unreachable", zap.Error(err))
		}
		in.notify(st)
	}
	return err
}

func (in *instance) setRunning(p *proc) {
	in.mu.Lock()
	in.cur = p
	in.retryAt = time.Time{}
	in.st.Running, in.st.PID, in.st.Since = true, p.pid, p.started
	in.st.Type, in.st.Version = p.desc.Name, p.desc.Version
	in.st.Deliver, in.st.Fetch = p.desc.Deliver, p.desc.Fetch
	in.st.Reachable = false
	st := in.st
	in.mu.Unlock()
	in.notify(st)
}

func (in *instance) setDown(why error, retryAt time.Time) {
	in.mu.Lock()
	in.cur = nil
	in.retryAt = retryAt
	in.st.Running, in.st.PID, in.st.Since, in.st.Reachable = false, 0, time.Time{}, false
	if why != nil {
		in.st.LastError, in.st.LastErrorAt = why.Error(), time.Now()
	}
	st := in.st
	in.mu.Unlock()
	in.notify(st)
}

func (in *instance) countRestart() {
	in.mu.Lock()
	in.st.Restarts++
	in.mu.Unlock()
}

func (in *instance) notify(st Status) {
	if in.m.opts.OnChange != nil {
		in.m.opts.OnChange(st)
	}
}

func (in *instance) status() Status {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.st
}

// shutdown stops supervision and kills the process.
func (in *instance) shutdown() {
	in.mu.Lock()
	in.stopped = true
	in.mu.Unlock()
	in.cancel()
	<-in.done
}

func (in *instance) kill(p *proc) {
	p.kill()
	in.log.Info("adapter stopped", zap.Int("pid", p.pid))
}

// current returns the live process, or an error wrapping
// plugins.ErrUnavailable and the time until the next launch attempt.
func (in *instance) current() (*proc, time.Duration, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cur != nil {
		return in.cur, 0, nil
	}
	if in.stopped {
		return nil, 0, fmt.Errorf("adapter %q is stopped: %w", in.name, plugins.ErrUnavailable)
	}
	wait := max(time.Until(in.retryAt), 0)
	return nil, wait, fmt.Errorf("adapter %q is restarting (next attempt in %s; last error: %s): %w",
		in.name, wait.Round(time.Millisecond), in.st.LastError, plugins.ErrUnavailable)
}

func (in *instance) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("adapter %q: %w", in.name, err)
}

func (in *instance) Describe(ctx context.Context) (plugins.Description, error) {
	p, _, err := in.current()
	if err != nil {
		return plugins.Description{}, err
	}
	d, err := p.ad.Describe(ctx)
	return d, in.wrap(err)
}

// Configure applies a new configuration block; once the adapter accepts
// it, it is also the block every later restart gets.
func (in *instance) Configure(ctx context.Context, config json.RawMessage) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	if err := p.ad.Configure(ctx, config); err != nil {
		var ce plugins.ConfigErrors
		if errors.As(err, &ce) {
			return err
		}
		return in.wrap(err)
	}
	in.mu.Lock()
	in.spec.Config = append(json.RawMessage(nil), config...)
	in.mu.Unlock()
	return nil
}

func (in *instance) Check(ctx context.Context) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	return in.wrap(p.ad.Check(ctx))
}

func (in *instance) Deliver(ctx context.Context, meta plugins.Meta, payload io.Reader) plugins.Result {
	p, wait, err := in.current()
	if err != nil {
		return plugins.Result{Status: plugins.Retry, RetryAfter: wait, Reason: err.Error(), Err: err}
	}
	res := p.ad.Deliver(ctx, meta, payload)
	if res.Err != nil {
		res.Err = in.wrap(res.Err)
		res.Reason = res.Err.Error()
	}
	return res
}

func (in *instance) Fetch(ctx context.Context, req plugins.FetchRequest, fn func(plugins.Inbound) error) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	return in.wrap(p.ad.Fetch(ctx, req, fn))
}

func (in *instance) Ack(ctx context.Context, receipt string) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	return in.wrap(p.ad.Ack(ctx, receipt))
}

func (in *instance) Nack(ctx context.Context, receipt, reason string) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	return in.wrap(p.ad.Nack(ctx, receipt, reason))
}

// Reject forwards the optional Reject; an adapter without it answers with
// an error matching plugins.ErrUnsupported.
func (in *instance) Reject(ctx context.Context, receipt, reason string) error {
	p, _, err := in.current()
	if err != nil {
		return err
	}
	return in.wrap(p.ad.Reject(ctx, receipt, reason))
}

var _ plugins.Rejecter = (*instance)(nil)

// backoff is jittered exponential backoff with a cap.
type backoff struct {
	initial, max time.Duration
	n            int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 62 && b.initial<<b.n > 0 && b.initial<<b.n < b.max {
		d = b.initial << b.n
	}
	b.n++
	// Half fixed, half random: spread out, yet never back at once.
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// mergeCancel returns a context cancelled when either parent is.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

// killGroup is used by the unresponsive watchdog; the exit then arrives on
// p.exited as for any crash.
func (p *proc) killGroup() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}
