package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulegate/mulegate/bundle"
)

// The crash test: a child process (this test binary, re-executed) puts
// bundles as fast as it can from several goroutines, in mixed sizes, and
// prints each ID the moment Put returns, which is when a node would
// acknowledge it. The parent kills it with SIGKILL at a random moment,
// reopens the store, and checks that every acknowledged bundle is there
// with its exact payload. Fifty rounds, one store directory.
//
// Lines the child prints:
//
//	P <id> <size>   stored (acknowledged)
//	d <id>          about to delete
//	D <id>          deleted
//	K <id> <n>      partial reception kept with n bytes
//	ready           the store is open

const (
	crashDirEnv   = "MULEGATE_STORE_CRASH_DIR"
	crashRoundEnv = "MULEGATE_STORE_CRASH_ROUND"
	crashRounds   = 50
	crashDest     = "peer:dtn://next/"
)

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("runs only as the crash test's child process")
	}
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	ctx := context.Background()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		fmt.Printf("open failed: %v\n", err)
		os.Exit(3)
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		outMu.Lock()
		os.Stdout.WriteString(line) // one write(2): whole or not at all
		outMu.Unlock()
	}
	say("ready")
	created := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(g)))
			src := bundle.MustParseEID(fmt.Sprintf("dtn://crash/r%dw%d", round, g))
			var acked []bundle.ID
			for seq := uint64(0); ; seq++ {
				var size int
				switch x := rng.IntN(100); {
				case x < 80:
					size = rng.IntN(2000)
				case x < 96:
					size = DefaultInlineMax + rng.IntN(200<<10)
				default:
					size = 1<<20 + rng.IntN(1<<20)
				}
				b, err := bundle.New(bundle.Params{
					Source: src, Destination: dstEID, Created: created, Sequence: seq,
					Lifetime: 24 * time.Hour, CRCType: bundle.CRC32C, PayloadLength: uint64(size),
				})
				if err != nil {
					panic(err)
				}
				id := b.ID()
				payload := io.LimitReader(payloadReader(id.String()), int64(size))
				if rng.IntN(100) < 8 {
					// An interrupted reception, kept.
					w, err := s.BeginPut(ctx, b, "peer:dtn://m/")
					if err != nil {
						panic(err)
					}
					n := size / 2
					if _, err := io.CopyN(w, payload, int64(n)); err != nil {
						panic(err)
					}
					if err := w.Abort(true); err != nil {
						panic(err)
					}
					if n > 0 {
						say("K %s %d", id, n)
					}
					continue
				}
				if err := s.Put(ctx, b, "peer:dtn://m/", payload); err != nil {
					panic(err)
				}
				say("P %s %d", id, size)
				acked = append(acked, id)
				if err := s.Enqueue(ctx, id, crashDest); err != nil {
					panic(err)
				}
				if rng.IntN(3) == 0 {
					if _, err := s.MarkInFlight(ctx, id, crashDest); err != nil {
						panic(err)
					}
				}
				if rng.IntN(10) == 0 {
					victim := acked[rng.IntN(len(acked))]
					say("d %s", victim)
					if err := s.Delete(ctx, victim, bundle.ReasonNoInformation); err != nil {
						panic(err)
					}
					say("D %s", victim)
				}
			}
		})
	}
	wg.Wait()
}

// crashState is what the parent knows the child acknowledged.
type crashState struct {
	size     map[string]int // P: stored, with its payload size
	deleting map[string]bool
	deleted  map[string]bool
	partial  map[string]uint64
	round    map[string]int // the round an ID was stored in
}

func (cs *crashState) line(l string, round int) error {
	f := strings.Fields(l)
	switch {
	case len(f) == 3 && f[0] == "P":
		n, err := strconv.Atoi(f[2])
		cs.size[f[1]] = n
		cs.round[f[1]] = round
		return err
	case len(f) == 2 && f[0] == "d":
		cs.deleting[f[1]] = true
	case len(f) == 2 && f[0] == "D":
		cs.deleted[f[1]] = true
	case len(f) == 3 && f[0] == "K":
		n, err := strconv.ParseUint(f[2], 10, 64)
		cs.partial[f[1]] = n
		return err
	case len(f) == 1 && f[0] == "ready":
	default:
		return fmt.Errorf("child said %q", l)
	}
	return nil
}

func TestCrash(t *testing.T) {
	if os.Getenv(crashDirEnv) != "" {
		t.Skip("this is the child")
	}
	dir := t.TempDir()
	cs := &crashState{
		size: map[string]int{}, deleting: map[string]bool{}, deleted: map[string]bool{},
		partial: map[string]uint64{}, round: map[string]int{},
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("store directory %s", dir)
	large := 0
	for round := 0; round < crashRounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			br := bufio.NewReader(out)
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return // a line cut short by the kill is not a line
				}
				lines <- strings.TrimSuffix(l, "\n")
			}
		}()
		// Most rounds die while putting; one in eight dies while still
		// opening (and so possibly while recovering from the last kill).
		var delay time.Duration
		early := round%8 == 3
		if early {
			delay = time.Duration(rng.IntN(40)) * time.Millisecond
		} else {
			delay = time.Duration(rng.IntN(300)) * time.Millisecond
		}
		timer := time.NewTimer(delay)
		if !early {
			timer.Stop()
		}
		ready := false
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				if l == "ready" && !ready {
					ready = true
					timer.Reset(delay)
				}
				if err := cs.line(l, round); err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			case <-timer.C:
				cmd.Process.Kill() // SIGKILL
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Exited() {
			t.Fatalf("round %d: child ended by itself (%v): %s", round, err, stderr.String())
		}
		for id := range cs.size {
			if cs.round[id] == round && cs.size[id] > DefaultInlineMax {
				large++
			}
		}
		verifyCrash(t, dir, cs, round, rng)
	}
	t.Logf("%d rounds: %d bundles acknowledged (%d in files), %d deleted, %d partials kept",
		crashRounds, len(cs.size), large, len(cs.deleted), len(cs.partial))
	if len(cs.size) < crashRounds || large == 0 || len(cs.partial) == 0 || len(cs.deleted) == 0 {
		t.Errorf("the child did too little for the test to mean much")
	}
}

// verifyCrash reopens the store after a kill and checks it against what
// the child acknowledged: every bundle of this round and a sample of the
// earlier ones by payload, all of them by presence.
func verifyCrash(t *testing.T, dir string, cs *crashState, round int, rng *rand.Rand) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer s.Close()
	for id, size := range cs.size {
		bid, err := bundle.ParseID(id)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Lookup(ctx, bid)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case cs.deleted[id]:
			if st.Held || !st.Deleted {
				t.Fatalf("round %d: %s was deleted, store says %+v", round, id, st)
			}
			continue
		case cs.deleting[id]:
			if !st.Held && !st.Deleted {
				t.Fatalf("round %d: %s was being deleted, store says %+v", round, id, st)
			}
			continue
		case !st.Held:
			t.Fatalf("round %d: acknowledged bundle %s (%d bytes, round %d) is missing: %+v", round, id, size, cs.round[id], st)
		}
		if cs.round[id] != round && rng.IntN(20) != 0 {
			continue
		}
		m, err := s.Get(ctx, bid)
		if err != nil || m.Bundle.Payload.Length != uint64(size) {
			t.Fatalf("round %d: %s: %v, %+v", round, id, err, m)
		}
		p, err := s.OpenPayload(ctx, bid)
		if err != nil {
			t.Fatalf("round %d: %s: %v", round, id, err)
		}
		got, err := io.ReadAll(p)
		p.Close()
		if err != nil || !bytes.Equal(got, payloadFor(id, size)) {
			t.Fatalf("round %d: %s: payload of %d bytes differs (%v)", round, id, len(got), err)
		}
	}
	partials, err := s.Partials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]uint64{}
	for _, p := range partials {
		have[p.ID.String()] = p.Received
	}
	for id, n := range cs.partial {
		if have[id] != n {
			t.Fatalf("round %d: partial %s kept with %d bytes, store has %d", round, id, n, have[id])
		}
	}
	st := s.Stats()
	if c := s.Counts(crashDest); c.InFlight != 0 {
		t.Fatalf("round %d: %d in flight after restart", round, c.InFlight)
	}
	if st.Receiving != 0 || st.ReservedB != 0 || st.Quarantined != 0 {
		t.Fatalf("round %d: Stats = %+v", round, st)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Fatalf("round %d: %d files in tmp/ after open", round, len(tmp))
	}
	// The counters rebuilt on open agree with the index.
	var bundles, parts int64
	s.EachHeld(ctx, func(h Held) error {
		if h.Partial {
			parts++
		} else {
			bundles++
		}
		return nil
	})
	if bundles != st.Bundles || parts != st.Partials {
		t.Fatalf("round %d: Stats says %d bundles and %d partials, the index %d and %d", round, st.Bundles, st.Partials, bundles, parts)
	}
	files, _ := os.ReadDir(filepath.Join(dir, "data"))
	if len(files) > int(bundles+parts) {
		t.Fatalf("round %d: %d payload files for %d bundles and partials", round, len(files), bundles+parts)
	}
}
