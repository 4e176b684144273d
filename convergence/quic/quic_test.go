package quic

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/convergence"
	"github.com/mulegate/mulegate/policy/identity"
)

func TestMutualAuthentication(t *testing.T) {
	ctx := testContext(t, time.Minute)
	p := newPair(ctx, t, nil, nil)
	if got := p.ab.Peer(); got != p.bob.eid {
		t.Errorf("alice sees %s, want %s", got, p.bob.eid)
	}
	if got := p.ba.Peer(); got != p.alice.eid {
		t.Errorf("bob sees %s, want %s", got, p.alice.eid)
	}

	// Both directions carry bundles, and the sink learns the previous hop.
	payload := []byte("hello bob")
	if err := p.ab.Send(ctx, newBundle(t, 1, uint64(len(payload))), bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	reply := []byte("hello alice")
	if err := p.ba.Send(ctx, newBundle(t, 2, uint64(len(reply))), bytes.NewReader(reply)); err != nil {
		t.Fatal(err)
	}
	p.bob.sink.wait(ctx, t, "bob's bundle", func() bool { return len(p.bob.sink.got) == 1 })
	p.alice.sink.wait(ctx, t, "alice's bundle", func() bool { return len(p.alice.sink.got) == 1 })
	for _, st := range p.bob.sink.got {
		if st.peer != p.alice.eid || st.sum != sha256.Sum256(payload) {
			t.Errorf("bob stored a bundle from %s with sum %x", st.peer, st.sum)
		}
	}
	for _, st := range p.alice.sink.got {
		if st.peer != p.bob.eid || st.sum != sha256.Sum256(reply) {
			t.Errorf("alice stored a bundle from %s with sum %x", st.peer, st.sum)
		}
	}
}

func TestUnknownCertificateRefused(t *testing.T) {
	ctx := testContext(t, time.Minute)
	alice, bob, mallory := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/"), mustIdentity(t, "dtn://mallory/")

	t.Run("client unknown to the server", func(t *testing.T) {
		server := newNode(t, bob, pinnedTrust(t, alice), nil)
		server.listen(t, "127.0.0.1:0")
		client := newNode(t, mallory, pinnedTrust(t, bob), nil) // mallory trusts bob, bob does not trust her
		if s, err := client.layer.Dial(ctx, server.addr, server.eid); err == nil {
			t.Fatalf("mallory got a session with %s", s.Peer())
		} else {
			t.Logf("refused as expected: %v", err)
		}
		server.noEvent(t)
		client.noEvent(t)
	})
	t.Run("server unknown to the client", func(t *testing.T) {
		server := newNode(t, mallory, pinnedTrust(t, alice), nil) // mallory would take alice
		server.listen(t, "127.0.0.1:0")
		client := newNode(t, alice, pinnedTrust(t, bob), nil) // alice trusts only bob
		if s, err := client.layer.Dial(ctx, server.addr, bundle.EID{}); err == nil {
			t.Fatalf("alice got a session with %s", s.Peer())
		} else {
			t.Logf("refused as expected: %v", err)
		}
		client.noEvent(t)
		server.noEvent(t)
	})
}

func TestWrongNodeIDRefused(t *testing.T) {
	ctx := testContext(t, time.Minute)
	alice, bob := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	carol := bundle.MustParseEID("dtn://carol/")

	t.Run("in the handshake", func(t *testing.T) {
		server := newNode(t, bob, pinnedTrust(t, alice), nil)
		server.listen(t, "127.0.0.1:0")
		client := newNode(t, alice, pinnedTrust(t, bob), nil)
		if s, err := client.layer.Dial(ctx, server.addr, carol); err == nil {
			t.Fatalf("dialling carol got a session with %s", s.Peer())
		} else {
			t.Logf("refused as expected: %v", err)
		}
		client.noEvent(t)
		server.noEvent(t)
	})
	t.Run("by the layer, when the TLS configuration does not check", func(t *testing.T) {
		server := newNode(t, bob, pinnedTrust(t, alice), nil)
		server.listen(t, "127.0.0.1:0")
		client := newNode(t, alice, pinnedTrust(t, bob), func(o *Options) {
			client := o.TLS.Client
			o.TLS.Client = func(bundle.EID) *tls.Config { return client(bundle.EID{}) }
		})
		if s, err := client.layer.Dial(ctx, server.addr, carol); err == nil {
			t.Fatalf("dialling carol got a session with %s", s.Peer())
		} else {
			t.Logf("refused as expected: %v", err)
		}
		client.noEvent(t)
		// bob's side saw the handshake complete, then the connection close
		// at once; if it got as far as a session, it must be down.
		select {
		case ev := <-server.events:
			if ev.Kind != convergence.SessionUp {
				t.Fatalf("bob: %v", ev.Kind)
			}
			if ev := server.next(ctx, t); ev.Kind != convergence.SessionDown {
				t.Fatalf("bob: %v after up", ev.Kind)
			}
		default:
		}
	})
}

// TestALPN dials the layer with raw quic-go offering various ALPN lists.
// The layer and the peers in the other tests share the ALPN constant, so
// only a client that does not can tell whether the layer really insists on
// "qbcl".
func TestALPN(t *testing.T) {
	ctx := testContext(t, time.Minute)
	alice, bob := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	// TLS alert 120, no_application_protocol, as a QUIC crypto error
	// (RFC 9001 §4.8: 0x0100 plus the alert).
	const noApplicationProtocol = quicgo.TransportErrorCode(0x100 + 120)
	for _, tc := range []struct {
		name   string
		protos []string
		ok     bool
	}{
		// The controls: without them, a refusal for some other reason
		// (certificates, addresses) would pass for an ALPN refusal.
		{"qbcl", []string{ALPN}, true},
		{"qbcl after another", []string{"h3", ALPN}, true},
		{"another protocol", []string{"h3"}, false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := newNode(t, bob, pinnedTrust(t, alice), nil)
			server.listen(t, "127.0.0.1:0")
			conn, err := quicgo.DialAddr(ctx, server.addr, identity.ClientConfig(alice, pinnedTrust(t, bob), tc.protos, ""), &quicgo.Config{})
			if conn != nil {
				t.Cleanup(func() { conn.CloseWithError(0, "") })
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("dial offering %q: %v", tc.protos, err)
				}
				if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != ALPN {
					t.Errorf("negotiated %q, want %q", got, ALPN)
				}
				if ev := server.next(ctx, t); ev.Kind != convergence.SessionUp || ev.Session.Peer() != bundle.MustParseEID("dtn://alice/") {
					t.Fatalf("server: %v", ev.Kind)
				}
				return
			}
			// The server, not the client's own TLS stack, must be the one
			// that says no, and in the handshake, before any session.
			var te *quicgo.TransportError
			if !errors.As(err, &te) || !te.Remote || te.ErrorCode != noApplicationProtocol {
				t.Fatalf("dial offering %q: %v; want the server's %v", tc.protos, err, noApplicationProtocol)
			}
			t.Logf("refused as expected: %v", err)
			server.noEvent(t)
		})
	}
}

func TestManySmallBundles(t *testing.T) {
	const total, senders = 20000, 4
	ctx := testContext(t, 5*time.Minute)
	p := newPair(ctx, t, nil, nil)
	start := time.Now()

	want := make(map[bundle.ID][32]byte, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for w := range senders {
		wg.Go(func() {
			for i := w; i < total; i += senders {
				payload := randomBytes(uint64(i), uint64(i%1500))
				b := newBundle(t, uint64(i), uint64(len(payload)))
				mu.Lock()
				want[b.ID()] = sha256.Sum256(payload)
				mu.Unlock()
				if err := p.ab.Send(ctx, b, bytes.NewReader(payload)); err != nil {
					errs <- fmt.Errorf("bundle %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p.bob.sink.wait(ctx, t, fmt.Sprintf("%d bundles", total), func() bool { return len(p.bob.sink.got) == total })
	t.Logf("%d bundles in %v", total, time.Since(start))
	for id, sum := range want {
		if got := p.bob.sink.got[id]; got.sum != sum {
			t.Fatalf("bundle %s arrived damaged or not at all", id)
		}
	}
	// Stream credit is released only after the handler returns, just after
	// the sink; wait for the counters to settle.
	waitStats(ctx, t, p.ba, func(s convergence.Stats) bool { return s.BundlesReceived == total })
	sent, recv := p.ab.Stats(), p.ba.Stats()
	if sent.BundlesSent != total || sent.BytesSent != recv.BytesReceived || recv.StreamsRefused != 0 || recv.PartialReceptions != 0 {
		t.Errorf("stats: sender %+v, receiver %+v", sent, recv)
	}
}

// waitStats waits until cond holds for s's counters. The counters are
// updated just after the sink returns; there is nothing to wait on but the
// sink's own progress, so it polls with a ticker.
func waitStats(ctx context.Context, t testing.TB, s convergence.Session, cond func(convergence.Stats) bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond(s.Stats()) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("stats never got there: %+v", s.Stats())
		}
	}
}

func TestFragment(t *testing.T) {
	ctx := testContext(t, time.Minute)
	p := newPair(ctx, t, nil, func(o *Options) {})
	p.bob.sink.setKeep()
	data := randomBytes(7, 300<<10)
	whole := newBundle(t, 7, uint64(len(data)))
	const off, n = 100 << 10, 150 << 10
	frag, err := whole.Fragment(off, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ab.Send(ctx, frag, io.NewSectionReader(bytes.NewReader(data), off, n)); err != nil {
		t.Fatal(err)
	}
	p.bob.sink.wait(ctx, t, "the fragment", func() bool { return len(p.bob.sink.got) == 1 })
	st, ok := p.bob.sink.got[frag.ID()]
	if !ok {
		t.Fatalf("bob has %v, not %s", p.bob.sink.got, frag.ID())
	}
	pr := st.b.Primary
	if !pr.IsFragment() || pr.FragmentOffset != off || pr.TotalADULength != uint64(len(data)) || st.b.Payload.Length != n {
		t.Errorf("fragment arrived as offset %d, total %d, length %d", pr.FragmentOffset, pr.TotalADULength, st.b.Payload.Length)
	}
	if !bytes.Equal(st.data, data[off:off+n]) {
		t.Error("fragment payload differs")
	}
}

func TestInterruptedTransferKept(t *testing.T) {
	for _, how := range []string{"sender cancels", "connection closes"} {
		t.Run(how, func(t *testing.T) {
			ctx := testContext(t, time.Minute)
			p := newPair(ctx, t, nil, nil)
			p.bob.sink.setKeep()
			data := randomBytes(3, 1<<20)
			b := newBundle(t, 3, uint64(len(data)))
			const sent = 300_000 // payload bytes that get through

			sendCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			sendErr := make(chan error, 1)
			stop := sendCtx.Done()
			if how == "connection closes" {
				// Send returns only once its payload reader does.
				stop = p.ab.Done()
			}
			go func() {
				sendErr <- p.ab.Send(sendCtx, b, &stallingReader{stop: stop, data: data[:sent]})
			}()
			p.bob.sink.wait(ctx, t, "the first bytes", func() bool { return p.bob.sink.progress.Load() == sent })
			switch how {
			case "sender cancels":
				cancel()
			case "connection closes":
				p.ab.Close(errors.New("leaving"))
			}
			err := <-sendErr
			if err == nil {
				t.Fatal("Send succeeded")
			}
			t.Logf("Send: %v", err)
			if how == "sender cancels" && !errors.Is(err, context.Canceled) {
				t.Errorf("Send's error is not the context's")
			}
			if how == "connection closes" && !errors.Is(err, convergence.ErrClosed) {
				t.Errorf("Send's error does not match ErrClosed")
			}

			p.bob.sink.wait(ctx, t, "the partial reception", func() bool { return len(p.bob.sink.partials) == 1 })
			part := p.bob.sink.partials[0]
			if part.received != sent || part.n != sent || !bytes.Equal(part.data, data[:sent]) {
				t.Fatalf("partial: InterruptedError says %d bytes, sink read %d, want %d", part.received, part.n, sent)
			}
			if !errors.Is(part.err, convergence.ErrInterrupted) {
				t.Errorf("payload error %v does not match ErrInterrupted", part.err)
			}
			if len(p.bob.sink.got) != 0 {
				t.Error("the sink has a complete bundle")
			}
			waitStats(ctx, t, p.ba, func(s convergence.Stats) bool { return s.PartialReceptions == 1 })
			if how != "sender cancels" {
				return
			}

			// The rest follows as a fragment, and the two pieces make the
			// whole bundle again.
			rest, err := b.Fragment(sent, uint64(len(data))-sent)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ab.Send(ctx, rest, io.NewSectionReader(bytes.NewReader(data), sent, int64(len(data))-sent)); err != nil {
				t.Fatal(err)
			}
			p.bob.sink.wait(ctx, t, "the rest", func() bool { return len(p.bob.sink.got) == 1 })
			head, err := part.b.Fragment(0, part.received)
			if err != nil {
				t.Fatal(err)
			}
			tail := p.bob.sink.got[rest.ID()]
			whole, r, err := bundle.Reassemble([]bundle.Part{
				{Bundle: head, Payload: bytes.NewReader(part.data)},
				{Bundle: tail.b, Payload: bytes.NewReader(tail.data)},
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if whole.ID() != b.ID() || !bytes.Equal(got, data) {
				t.Error("the reassembled bundle differs from the one sent")
			}
		})
	}
}

func TestOversizedBundleRefused(t *testing.T) {
	ctx := testContext(t, time.Minute)
	const limit = 1 << 20
	for _, tc := range []struct {
		name    string
		limits  func(*Options)
		payload uint64
	}{
		{"payload header over MaxPayload", func(o *Options) { o.Limits.MaxPayload = limit }, 4 << 20},
		{"bundle over MaxBundleSize", func(o *Options) { o.MaxBundleSize = limit }, limit}, // the header makes it too big
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(ctx, t, nil, tc.limits)
			b := newBundle(t, 1, tc.payload)
			err := p.ab.Send(ctx, b, io.LimitReader(zeros{}, int64(tc.payload)))
			var rej *convergence.RejectError
			if !errors.As(err, &rej) || !errors.Is(err, bundle.ErrTooLarge) || rej.Transient {
				t.Fatalf("Send: %v; want a fatal refusal matching bundle.ErrTooLarge", err)
			}
			var se *quicgo.StreamError
			if !errors.As(err, &se) || !se.Remote || Code(se.ErrorCode) != CodeBundleTooLarge {
				t.Errorf("Send: %v; want the peer's %v", err, CodeBundleTooLarge)
			}
			t.Logf("Send: %v", err)
			waitStats(ctx, t, p.ba, func(s convergence.Stats) bool { return s.StreamsRefused == 1 })
			p.bob.sink.mu.Lock()
			defer p.bob.sink.mu.Unlock()
			if p.bob.sink.calls != 0 || len(p.bob.sink.got) != 0 {
				t.Errorf("the sink saw the bundle (%d calls, %d stored)", p.bob.sink.calls, len(p.bob.sink.got))
			}
			if s := p.ab.Stats(); s.SendsRefused != 1 || s.BundlesSent != 0 {
				t.Errorf("sender stats %+v", s)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestRefusalReachesSender(t *testing.T) {
	ctx := testContext(t, time.Minute)
	for _, tc := range []struct {
		refusal   error
		reason    bundle.StatusReason
		transient bool
	}{
		{convergence.Reject(bundle.ReasonLifetimeExpired, errors.New("expired yesterday")), bundle.ReasonLifetimeExpired, false},
		{convergence.Reject(bundle.ReasonFailedSecurity, errors.New("bad signature")), bundle.ReasonFailedSecurity, false},
		{convergence.RejectTransient(bundle.ReasonDepletedStorage, errors.New("store full")), bundle.ReasonDepletedStorage, true},
		{errors.New("disk on fire"), bundle.ReasonDepletedStorage, true},
		{fmt.Errorf("checking: %w", bundle.ErrUnprocessableBlock), bundle.ReasonBlockUnsupported, false},
	} {
		t.Run(tc.refusal.Error(), func(t *testing.T) {
			p := newPair(ctx, t, nil, nil)
			p.bob.sink.setRefuse(func(*bundle.Bundle) error { return tc.refusal })
			// Big enough that alice is still writing when bob says no.
			const n = 8 << 20
			err := p.ab.Send(ctx, newBundle(t, 1, n), io.LimitReader(zeros{}, n))
			var rej *convergence.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("Send: %v; want a *RejectError", err)
			}
			if rej.Reason != tc.reason || rej.Transient != tc.transient {
				t.Errorf("Send: %v; want reason %s, transient %v", err, tc.reason, tc.transient)
			}
			waitStats(ctx, t, p.ba, func(s convergence.Stats) bool { return s.StreamsRefused == 1 })
		})
	}
}

func TestBidirectionalStreamIsProtocolError(t *testing.T) {
	ctx := testContext(t, time.Minute)
	alice, bob := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	server := newNode(t, bob, pinnedTrust(t, alice), nil)
	server.listen(t, "127.0.0.1:0")
	conn := rawDial(ctx, t, server.addr, alice, pinnedTrust(t, bob))
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte{0x9f}); err != nil {
		t.Fatal(err)
	}
	var ae *quicgo.ApplicationError
	if err := waitClosed(ctx, t, conn); !errors.As(err, &ae) || !ae.Remote || Code(ae.ErrorCode) != CodeProtocolError {
		t.Fatalf("connection ended with %v; want the peer's %v", err, CodeProtocolError)
	}
	if ev := server.next(ctx, t); ev.Kind != convergence.SessionUp {
		t.Fatalf("bob: %v", ev.Kind)
	}
	if ev := server.next(ctx, t); ev.Kind != convergence.SessionDown {
		t.Fatalf("bob: %v", ev.Kind)
	}
}

func TestStreamForms(t *testing.T) {
	ctx := testContext(t, time.Minute)
	alice, bob := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	payload := []byte("wrapped or not")
	encoded, err := bundle.Marshal(newBundle(t, 9, 0), payload)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := append(cborBytesHead(uint64(len(encoded))), encoded...)

	for _, tc := range []struct {
		name   string
		stream []byte
		stored bool
		closes bool // the connection is closed with QBCL_PROTOCOL_ERROR
	}{
		{"direct", encoded, true, false},
		{"wrapped", wrapped, true, false},
		{"two bundles", append(append([]byte{}, encoded...), encoded...), true, true},
		{"wrapped with more after", append(append([]byte{}, wrapped...), 0x00), true, true},
		{"wrapped, short", wrapped[:len(wrapped)-1], false, true},
		{"empty", nil, false, true},
		{"not a bundle", []byte("hello"), false, true},
		{"wrapped, not a bundle", []byte("\x45hello"), false, true},
		{"BPv6", []byte{0x06, 0x81, 0x10}, false, false},
		{"bad CRC", flipLast(encoded, 3), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := newNode(t, bob, pinnedTrust(t, alice), nil)
			server.sink.setKeep()
			server.listen(t, "127.0.0.1:0")
			conn := rawDial(ctx, t, server.addr, alice, pinnedTrust(t, bob))
			str, err := conn.OpenUniStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			str.Write(tc.stream)
			str.Close()
			up := server.next(ctx, t).Session
			if tc.closes {
				var ae *quicgo.ApplicationError
				if err := waitClosed(ctx, t, conn); !errors.As(err, &ae) || Code(ae.ErrorCode) != CodeProtocolError {
					t.Fatalf("connection ended with %v", err)
				}
			} else {
				waitStats(ctx, t, up, func(s convergence.Stats) bool { return s.BundlesReceived+s.StreamsRefused == 1 })
				if conn.Context().Err() != nil {
					t.Fatalf("connection closed: %v", context.Cause(conn.Context()))
				}
			}
			server.sink.mu.Lock()
			defer server.sink.mu.Unlock()
			if got := len(server.sink.got) == 1; got != tc.stored {
				t.Fatalf("stored: %v, want %v", got, tc.stored)
			}
			for _, st := range server.sink.got {
				if !bytes.Equal(st.data, payload) {
					t.Errorf("payload %q", st.data)
				}
			}
		})
	}
}

// waitClosed waits for conn to close, and returns why.
func waitClosed(ctx context.Context, t testing.TB, conn *quicgo.Conn) error {
	t.Helper()
	select {
	case <-conn.Context().Done():
		return context.Cause(conn.Context())
	case <-ctx.Done():
		t.Fatal("the connection stayed open")
		return nil
	}
}

func flipLast(b []byte, back int) []byte {
	c := bytes.Clone(b)
	c[len(c)-back] ^= 0xff
	return c
}

func cborBytesHead(n uint64) []byte {
	switch {
	case n < 24:
		return []byte{0x40 | byte(n)}
	case n < 1<<8:
		return []byte{0x58, byte(n)}
	case n < 1<<16:
		return []byte{0x59, byte(n >> 8), byte(n)}
	}
	return []byte{0x5a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func TestIPv6(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	ctx := testContext(t, time.Minute)
	alice, bob := mustIdentity(t, "dtn://alice/"), mustIdentity(t, "dtn://bob/")
	server := newNode(t, bob, pinnedTrust(t, alice), nil)
	server.listen(t, "[::1]:0")
	client := newNode(t, alice, pinnedTrust(t, bob), nil)
	s, err := client.layer.Dial(ctx, server.addr, server.eid)
	if err != nil {
		t.Fatal(err)
	}
	if ip := s.RemoteAddr().(*net.UDPAddr).IP; !ip.Equal(net.IPv6loopback) {
		t.Errorf("remote address %v", s.RemoteAddr())
	}
	payload := []byte("over v6")
	if err := s.Send(ctx, newBundle(t, 1, uint64(len(payload))), bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	server.sink.wait(ctx, t, "the bundle", func() bool { return len(server.sink.got) == 1 })
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"":                  ":4556",
		":0":                ":0",
		"example.org":       "example.org:4556",
		"example.org:9000":  "example.org:9000",
		"example.org:":      "example.org:4556",
		"192.0.2.1":         "192.0.2.1:4556",
		"2001:db8::1":       "[2001:db8::1]:4556",
		"[2001:db8::1]":     "[2001:db8::1]:4556",
		"[2001:db8::1]:123": "[2001:db8::1]:123",
		"[::]:0":            "[::]:0",
	} {
		if got := withDefaultPort(in); got != want {
			t.Errorf("withDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSessionDown(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		ctx := testContext(t, time.Minute)
		p := newPair(ctx, t, nil, nil)
		if err := p.ab.Close(nil); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*node{p.alice, p.bob} {
			ev := n.next(ctx, t)
			if ev.Kind != convergence.SessionDown {
				t.Fatalf("%s: %v", n.eid, ev.Kind)
			}
			<-ev.Session.Done()
			err := ev.Session.Err()
			var ae *quicgo.ApplicationError
			if !errors.Is(err, convergence.ErrClosed) || !errors.As(err, &ae) || Code(ae.ErrorCode) != CodeNoError {
				t.Errorf("%s: session ended with %v", n.eid, err)
			}
		}
		err := p.ab.Send(ctx, newBundle(t, 1, 1), bytes.NewReader([]byte{1}))
		if !errors.Is(err, convergence.ErrClosed) {
			t.Errorf("Send on a closed session: %v", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		ctx := testContext(t, time.Minute)
		idle := func(o *Options) { o.IdleTimeout, o.KeepAlive = 300*time.Millisecond, -1 }
		p := newPair(ctx, t, idle, idle)
		for _, n := range []*node{p.alice, p.bob} {
			ev := n.next(ctx, t)
			if ev.Kind != convergence.SessionDown {
				t.Fatalf("%s: %v", n.eid, ev.Kind)
			}
			var idleErr *quicgo.IdleTimeoutError
			if err := ev.Session.Err(); !errors.As(err, &idleErr) {
				t.Errorf("%s: session ended with %v, not an idle timeout", n.eid, err)
			}
		}
	})
	t.Run("layer closed", func(t *testing.T) {
		ctx := testContext(t, time.Minute)
		p := newPair(ctx, t, nil, nil)
		if err := p.bob.layer.Close(); err != nil {
			t.Fatal(err)
		}
		// Close returns after SessionDown was delivered.
		select {
		case ev := <-p.bob.events:
			if ev.Kind != convergence.SessionDown {
				t.Fatalf("bob: %v", ev.Kind)
			}
		default:
			t.Fatal("bob's layer closed without SessionDown")
		}
		if ev := p.alice.next(ctx, t); ev.Kind != convergence.SessionDown {
			t.Fatalf("alice: %v", ev.Kind)
		}
		if _, err := p.bob.layer.Dial(ctx, "127.0.0.1:1", bundle.EID{}); !errors.Is(err, convergence.ErrClosed) {
			t.Errorf("Dial on a closed layer: %v", err)
		}
	})
}
