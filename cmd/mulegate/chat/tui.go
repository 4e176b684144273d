package chat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	tea "charm.land/bubbletea/v2"
	"github.com/mulegate/mulegate/bundle"
	"github.com/mulegate/mulegate/gateway/api"
)

// Run runs a chat session until the user quits or ctx ends.
func Run(ctx context.Context, o Options) error {
	ep, err := Endpoint(o.Group)
	if err != nil {
		return err
	}
	st, err := o.Client.Status(ctx)
	if err != nil {
		return fmt.Errorf("reaching the node: %w", err)
	}
	me, err := bundle.ParseEID(st.Node)
	if err != nil {
		return fmt.Errorf("the node's ID %q: %w", st.Node, err)
	}
	if _, err := o.Client.Register(ctx, ep); err != nil {
		return fmt.Errorf("registering %s: %w", ep, err)
	}
	s := &session{
		c: o.Client, group: o.Group, ep: ep, me: me, incoming: o.Incoming, history: o.History,
		lifetime: o.Lifetime,
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []tea.ProgramOption{tea.WithContext(ctx)}
	if o.In != nil {
		opts = append(opts, tea.WithInput(o.In))
	}
	if o.Out != nil {
		opts = append(opts, tea.WithOutput(o.Out))
	}
	p := tea.NewProgram(newModel(ctx, s), opts...)
	go s.receive(ctx, p.Send)
	_, err = p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// receive follows the chat endpoint's deliveries and hands each message to
// the screen, reconnecting with backoff when the node goes away.
func (s *session) receive(ctx context.Context, send func(tea.Msg)) {
	backoff := time.Second
	for ctx.Err() == nil {
		connected := false
		err := s.c.Stream(ctx, s.ep, func(d api.Delivery) error {
			if !connected {
				connected, backoff = true, time.Second
			}
			m, err := s.take(ctx, d)
			if err != nil {
				send(noteMsg("could not take a message: " + err.Error()))
				return nil
			}
			send(chatMsg(m))
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		send(noteMsg(fmt.Sprintf("lost the node (%v); trying again in %v", err, backoff)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

type (
	chatMsg message
	noteMsg string
	// linesMsg are lines a command produced (/peers, /history).
	linesMsg []string
)

type model struct {
	ctx   context.Context
	s     *session
	lines []string
	input []rune
	cur   int
	w, h  int
}

func newModel(ctx context.Context, s *session) *model {
	m := &model{ctx: ctx, s: s, w: 80, h: 24}
	m.add(fmt.Sprintf("joined %s as %s. Type a message and press Enter; /help lists the commands.", s.ep, s.me.NodeName()))
	m.add("Messages are signed by the sender's node. ✓ marks a signature this node verified (with a group CA, the member name is shown); without ✓ a name is only what the sending node claims.")
	return m
}

func (m *model) Init() tea.Cmd { return nil }

func (m *model) add(lines ...string) {
	m.lines = append(m.lines, lines...)
	if over := len(m.lines) - 2000; over > 0 {
		m.lines = m.lines[over:]
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.w, m.h = max(msg.Width, 20), max(msg.Height, 5)
	case chatMsg:
		m.add(formatMessage(message(msg), time.Now()))
	case noteMsg:
		m.add("-- " + string(msg))
	case linesMsg:
		m.add(msg...)
	case tea.PasteMsg:
		m.insert(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg.Content))
	case tea.KeyPressMsg:
		switch msg.String() {
		case "ctrl+c":
			return m, tea.Quit
		case "ctrl+d":
			if len(m.input) == 0 {
				return m, tea.Quit
			}
		case "enter":
			line := strings.TrimSpace(string(m.input))
			m.input, m.cur = nil, 0
			return m, m.submit(line)
		case "backspace", "ctrl+h":
			if m.cur > 0 {
				m.input = append(m.input[:m.cur-1], m.input[m.cur:]...)
				m.cur--
			}
		case "delete":
			if m.cur < len(m.input) {
				m.input = append(m.input[:m.cur], m.input[m.cur+1:]...)
			}
		case "left", "ctrl+b":
			m.cur = max(0, m.cur-1)
		case "right", "ctrl+f":
			m.cur = min(len(m.input), m.cur+1)
		case "home", "ctrl+a":
			m.cur = 0
		case "end", "ctrl+e":
			m.cur = len(m.input)
		case "ctrl+u":
			m.input, m.cur = m.input[m.cur:], 0
		default:
			if msg.Text != "" {
				m.insert(msg.Text)
			}
		}
	}
	return m, nil
}

func (m *model) insert(s string) {
	s = Clean(s)
	r := []rune(s)
	in := make([]rune, 0, len(m.input)+len(r))
	in = append(in, m.input[:m.cur]...)
	in = append(in, r...)
	in = append(in, m.input[m.cur:]...)
	m.input, m.cur = in, m.cur+len(r)
}

const help = `commands:
  /share FILE     send a file to the group (receivers save it in their incoming directory)
  /history [N]    show the last N messages kept in the history file (default 20)
  /peers          the peers this node knows and which are in contact
  /help           this help
  /quit           leave (ctrl+c does too)
anything else is sent to the group as a message.`

// submit acts on an entered line. Network work runs as a command, off the
// screen's goroutine.
func (m *model) submit(line string) tea.Cmd {
	if line == "" {
		return nil
	}
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		text := strings.TrimPrefix(line, "/")
		return func() tea.Msg {
			if err := m.s.sendText(m.ctx, text); err != nil {
				return noteMsg("not sent: " + err.Error())
			}
			return nil
		}
	}
	switch cmd {
	case "/quit", "/exit":
		return tea.Quit
	case "/help":
		m.add(strings.Split(help, "\n")...)
	case "/share":
		if arg == "" {
			m.add("-- /share FILE: which file?")
			return nil
		}
		path := expandHome(arg)
		m.add(fmt.Sprintf("-- sharing %s …", filepath.Base(path)))
		return func() tea.Msg {
			n, err := m.s.share(m.ctx, path)
			if err != nil {
				return noteMsg("not shared: " + err.Error())
			}
			return noteMsg(fmt.Sprintf("shared %s (%s); it is on its way", filepath.Base(path), humanBytes(n)))
		}
	case "/history":
		n := 20
		if arg != "" {
			v, err := strconv.Atoi(arg)
			if err != nil || v < 1 {
				m.add("-- /history N: N is a number of messages")
				return nil
			}
			n = v
		}
		return func() tea.Msg {
			msgs, err := m.s.lastHistory(n)
			if err != nil {
				return noteMsg("history: " + err.Error())
			}
			out := []string{fmt.Sprintf("-- the last %d messages in %s:", len(msgs), m.s.history)}
			for _, h := range msgs {
				out = append(out, "   "+formatMessage(h, time.Now()))
			}
			return linesMsg(append(out, "-- end of history"))
		}
	case "/peers":
		return func() tea.Msg {
			peers, err := m.s.c.Peers(m.ctx)
			if err != nil {
				return noteMsg("peers: " + err.Error())
			}
			if len(peers) == 0 {
				return noteMsg("no peers yet: the node has met nobody")
			}
			out := []string{"-- peers:"}
			for _, p := range peers {
				state := "not in contact"
				if p.Connected {
					state = "in contact since " + p.ContactSince.Local().Format("15:04:05")
				} else if !p.LastSeen.IsZero() {
					state = "last seen " + ago(time.Since(p.LastSeen)) + " ago"
				}
				out = append(out, fmt.Sprintf("   %s  %s  (%d contacts)", p.Node, state, p.Contacts))
			}
			return linesMsg(out)
		}
	default:
		m.add(fmt.Sprintf("-- %s is not a command; /help lists them (start with // to send a line that begins with /)", cmd))
	}
	return nil
}

func (m *model) View() tea.View {
	w, h := m.w, m.h
	header := fmt.Sprintf("#%s — %s via %s — ✓ = verified signature — /help", m.s.group, m.s.me.NodeName(), m.s.me)
	var body []string
	for _, l := range m.lines {
		body = append(body, wrap(l, w)...)
	}
	rows := h - 3
	if len(body) > rows {
		body = body[len(body)-rows:]
	}
	var b strings.Builder
	b.WriteString(truncate(header, w))
	b.WriteByte('\n')
	for i := 0; i < rows-len(body); i++ {
		b.WriteByte('\n')
	}
	for _, l := range body {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteString(strings.Repeat("─", w))
	b.WriteByte('\n')
	// The input line scrolls to keep the cursor in view.
	prompt := "> "
	room := w - len(prompt) - 1
	start := 0
	if m.cur > room {
		start = m.cur - room
	}
	end := min(len(m.input), start+room)
	b.WriteString(prompt + string(m.input[start:end]))
	v := tea.NewView(b.String())
	v.AltScreen = true
	v.WindowTitle = "mulegate chat #" + m.s.group
	v.Cursor = tea.NewCursor(len(prompt)+m.cur-start, h-1)
	return v
}

func formatMessage(m message, now time.Time) string {
	hops := "? hops"
	switch {
	case m.Hops == 1:
		hops = "1 hop"
	case m.Hops >= 0:
		hops = fmt.Sprintf("%d hops", m.Hops)
	}
	from := m.From
	switch {
	case m.Verified == "you" || m.Verified == m.From || strings.HasPrefix(m.Verified, "dtn://"+m.From+"/"):
		from += " ✓"
	case m.Verified != "":
		from += " ✓" + m.Verified
	default:
		from += " (unverified)"
	}
	head := fmt.Sprintf("%s %s (%s, %s old)", m.Time.Local().Format("15:04:05"), from, hops, ago(time.Duration(m.AgeMS)*time.Millisecond))
	switch m.Kind {
	case KindText:
		return head + ": " + m.Text
	case KindFile:
		return fmt.Sprintf("%s shared %s (%s), saved as %s", head, m.Name, humanBytes(m.Bytes), m.Path)
	}
	return head + " " + m.Text
}

// ago prints a duration the way people say it: 4s, 12m, 3h05m, 2d04h.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// wrap cuts s into lines of at most w runes.
func wrap(s string, w int) []string {
	if w < 1 {
		return []string{s}
	}
	var out []string
	for utf8.RuneCountInString(s) > w {
		r := []rune(s)
		cut := w
		// Prefer to break at a space in the last third of the line.
		for i := w; i > w*2/3; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		out = append(out, string(r[:cut]))
		s = strings.TrimLeft(string(r[cut:]), " ")
	}
	return append(out, s)
}

func truncate(s string, w int) string {
	r := []rune(s)
	if len(r) <= w {
		return s
	}
	return string(r[:max(0, w-1)]) + "…"
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}
