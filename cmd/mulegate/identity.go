package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mulegate/mulegate/policy/identity"
)

const day = 24 * time.Hour

// newIdentityCmd is `mulegate identity`: the node's key and certificate, group
// CAs, and which peers to trust. Setting up a group takes five commands:
// ca init, init, request, issue, install --trust-issuer.
func newIdentityCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Manage this node's identity, group certificate authorities and trusted peers",
		Long: `Manage this node's identity (an Ed25519 key and an X.509 certificate naming
its node ID), group certificate authorities, and which peers to trust.

With no trusted CA or certificate, a node trusts each peer on first use and
pins its key. To form a group with a CA instead:

  mulegate identity ca init campfire --out ./campfire-ca  # organiser, once
  mulegate identity init --node dtn://alice/             # each member
  mulegate identity request -o alice.csr                 # member, sends it to the organiser
  mulegate identity issue --ca ./campfire-ca --name campfire/alice --request alice.csr -o alice.crt
  mulegate identity install --trust-issuer alice.crt     # member, with the organiser's reply

A node that serves several groups (a mule) trusts each group's CA with
'mulegate identity trust CA.crt'.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data", defaultDataDir(), "data directory; the identity lives in DATA/"+identity.DirName)
	dir := func() string { return filepath.Join(dataDir, identity.DirName) }
	cmd.AddCommand(
		newIdentityInitCmd(dir),
		newIdentityCACmd(),
		newIdentityRequestCmd(dir),
		newIdentityIssueCmd(),
		newIdentityInstallCmd(dir),
		newIdentityTrustCmd(dir),
		newIdentityShowCmd(dir),
	)
	return cmd
}

func newIdentityInitCmd(dir func() string) *cobra.Command {
	var (
		node  string
		force bool
		days  int
	)
	cmd := &cobra.Command{
		Use:   "init --node EID",
		Short: "Make this node's key and a self-signed certificate for its node ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := dir()
			if identity.Exists(d) && !force {
				what := "an identity"
				if id, err := identity.Load(d); err == nil {
					what = "the identity of " + id.NodeID()
				}
				return fmt.Errorf("%s already exists in %s; pass --force to replace it (peers that pinned its key will refuse the new one, and a CA-issued certificate must be issued again)", what, d)
			}
			id, err := identity.Generate(node, time.Duration(days)*day)
			if err != nil {
				return err
			}
			if err := id.Save(d); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "created identity %s in %s\n", id.NodeID(), d)
			fmt.Fprintf(out, "key fingerprint %s\n", id.Fingerprint())
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node ID, such as dtn://alice/ or ipn:12.0 (required)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing identity")
	cmd.Flags().IntVar(&days, "days", 3650, "validity of the self-signed certificate, in days")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func newIdentityCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Run a group certificate authority",
	}
	var (
		out   string
		days  int
		force bool
	)
	initCmd := &cobra.Command{
		Use:   "init GROUP --out DIR",
		Short: "Make a group CA: a key and a self-signed CA certificate in DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(filepath.Join(out, identity.CAKeyFile)); err == nil && !force {
				return fmt.Errorf("a CA already exists in %s; pass --force to replace it (every certificate it issued will stop being trusted by members who trust the new one)", out)
			}
			ca, err := identity.NewCA(args[0], time.Duration(days)*day)
			if err != nil {
				return err
			}
			if err := ca.Save(out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "created CA for group %s in %s, key %s\n", ca.Group(), out, identity.Fingerprint(ca.Certificate()))
			fmt.Fprintf(w, "members trust it through the certificates it issues (install --trust-issuer), or %s; keep %s secret\n",
				filepath.Join(out, identity.CACertFile), filepath.Join(out, identity.CAKeyFile))
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "directory for ca.key and ca.crt (required)")
	initCmd.Flags().IntVar(&days, "days", 3650, "validity of the CA certificate, in days")
	initCmd.Flags().BoolVar(&force, "force", false, "replace an existing CA")
	_ = initCmd.MarkFlagRequired("out")
	cmd.AddCommand(initCmd)
	return cmd
}

func newIdentityRequestCmd(dir func() string) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "request -o FILE",
		Short: "Write a certificate request for this node, for the group CA to issue from",
		Long: `Write a PKCS#10 certificate request for this node's key and node ID. Send it
to the group's organiser, who issues a certificate from it; the private key
never leaves this node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := identity.Load(dir())
			if err != nil {
				return err
			}
			csr, err := id.Request()
			if err != nil {
				return err
			}
			if err := writeOutput(cmd, out, csr); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "request for %s, key fingerprint %s\n", id.NodeID(), id.Fingerprint())
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "-", "file to write the request to; - for standard output")
	return cmd
}

func newIdentityIssueCmd() *cobra.Command {
	var (
		caDir, name, request, out string
		days                      int
	)
	cmd := &cobra.Command{
		Use:   "issue --ca DIR --name GROUP/MEMBER --request CSR -o FILE",
		Short: "Issue a member certificate from a certificate request",
		Long: `Issue a member certificate from a request made with 'mulegate identity
request'. The output holds the member's certificate followed by the CA's, for
the member to install with 'mulegate identity install'. Check the key
fingerprint printed here against the one the member sees, over a channel
you trust.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := identity.LoadCA(caDir)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(request)
			if err != nil {
				return fmt.Errorf("read request: %w", err)
			}
			req, err := identity.ParseRequest(data)
			if err != nil {
				return fmt.Errorf("%s: %w", request, err)
			}
			leaf, err := ca.Issue(name, req.NodeID, req.PublicKey, time.Duration(days)*day)
			if err != nil {
				return err
			}
			if err := writeOutput(cmd, out, identity.EncodeChain(leaf, ca.Certificate())); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "issued %s for %s, key fingerprint %s, valid until %s\n",
				name, req.NodeID, identity.Fingerprint(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "CA directory made by 'identity ca init' (required)")
	cmd.Flags().StringVar(&name, "name", "", "member name GROUP/MEMBER, such as campfire/alice (required)")
	cmd.Flags().StringVar(&request, "request", "", "certificate request file made by 'identity request' (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "-", "file to write the certificate to; - for standard output")
	cmd.Flags().IntVar(&days, "days", 365, "validity of the certificate, in days (never beyond the CA's)")
	for _, f := range []string{"ca", "name", "request"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func newIdentityInstallCmd(dir func() string) *cobra.Command {
	var trustIssuer bool
	cmd := &cobra.Command{
		Use:   "install FILE",
		Short: "Install a certificate issued by the group CA for this node",
		Long: `Install the certificate the organiser issued for this node (the output of
'mulegate identity issue': this node's certificate followed by the CA's).

With --trust-issuer, the CA that issued it also becomes a trusted root, as
'mulegate identity trust' would make it, and trust-on-first-use goes off.
Its key fingerprint is printed: compare it with the one 'mulegate identity
ca init' printed for the organiser, over a channel you trust.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d := dir()
			id, err := identity.Load(d)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read certificate: %w", err)
			}
			next, err := id.Install(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			var issuer *x509.Certificate
			if trustIssuer {
				// Find the CA before saving anything, so that a file without
				// one changes nothing.
				if issuer, err = issuerIn(data, next.Leaf()); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			}
			if err := next.Save(d); err != nil {
				return err
			}
			leaf := next.Leaf()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "installed certificate for %s", next.NodeID())
			if next.Name() != "" {
				fmt.Fprintf(w, " as %s", next.Name())
			}
			fmt.Fprintf(w, ", issued by %s, valid until %s\n", leaf.Issuer, leaf.NotAfter.UTC().Format(time.RFC3339))
			if issuer != nil {
				return trustCertificates(w, d, identity.EncodeChain(issuer))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&trustIssuer, "trust-issuer", false, "also trust the CA that issued the certificate (its certificate must be in FILE)")
	return cmd
}

// issuerIn finds, in a PEM chain, the CA certificate that signed leaf.
func issuerIn(data []byte, leaf *x509.Certificate) (*x509.Certificate, error) {
	certs, err := identity.ParseChain(data)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if c.IsCA && leaf.CheckSignatureFrom(c) == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("--trust-issuer: the file holds no CA certificate that signed %s's certificate; trust the CA with 'mulegate identity trust CA.crt' instead", leaf.Subject.CommonName)
}

func newIdentityTrustCmd(dir func() string) *cobra.Command {
	return &cobra.Command{
		Use:   "trust FILE",
		Short: "Trust a group CA, or one node's certificate",
		Long: `Trust the certificates in FILE: a CA certificate makes every member it
issues trusted; any other certificate trusts that one node's key. Once
anything is trusted this way, trust-on-first-use is off: unknown peers are
refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read certificate: %w", err)
			}
			if err := trustCertificates(cmd.OutOrStdout(), dir(), data); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return nil
		},
	}
}

// trustCertificates adds the PEM certificates in data to the trusted roots
// of the identity in dir, and says what changed.
func trustCertificates(w io.Writer, dir string, data []byte) error {
	wasTOFU := false
	if tr, err := identity.LoadTrust(dir); err == nil {
		wasTOFU = tr.TOFU()
	}
	paths, err := identity.AddTrusted(dir, data)
	if err != nil {
		return err
	}
	certs, err := identity.ParseChain(data)
	if err != nil {
		return err
	}
	for i, c := range certs {
		fmt.Fprintf(w, "trusting %s (%s)\n", certLabel(c), paths[i])
	}
	if wasTOFU {
		fmt.Fprintln(w, "trust-on-first-use is now off: only trusted CAs and certificates are accepted")
	}
	return nil
}

// certLabel names a trusted certificate for people.
func certLabel(c *x509.Certificate) string {
	if c.IsCA {
		return fmt.Sprintf("CA %q, key %s", c.Subject.CommonName, identity.Fingerprint(c))
	}
	if len(c.URIs) > 0 {
		return fmt.Sprintf("node %s, key %s", c.URIs[0], identity.Fingerprint(c))
	}
	return fmt.Sprintf("%q", c.Subject)
}

// identityShow is what `identity show --json` prints.
type identityShow struct {
	NodeID      string     `json:"node_id"`
	Name        string     `json:"name,omitempty"`
	Fingerprint string     `json:"fingerprint"`
	NotBefore   time.Time  `json:"not_before"`
	NotAfter    time.Time  `json:"not_after"`
	Issuer      string     `json:"issuer"`
	SelfSigned  bool       `json:"self_signed"`
	Dir         string     `json:"dir"`
	Trust       trustShown `json:"trust"`
}

type trustShown struct {
	Mode   string   `json:"mode"` // tofu, ca, pinned, ca+pinned
	CAs    []string `json:"cas,omitempty"`
	Pinned []string `json:"pinned,omitempty"`
	Pins   int      `json:"tofu_pins"`
}

func newIdentityShowCmd(dir func() string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show this node's identity and trust configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := dir()
			id, err := identity.Load(d)
			if err != nil {
				return err
			}
			tr, err := identity.LoadTrust(d)
			if err != nil {
				return err
			}
			leaf := id.Leaf()
			s := identityShow{
				NodeID:      id.NodeID(),
				Name:        id.Name(),
				Fingerprint: id.Fingerprint(),
				NotBefore:   leaf.NotBefore.UTC(),
				NotAfter:    leaf.NotAfter.UTC(),
				Issuer:      leaf.Issuer.String(),
				SelfSigned:  id.SelfSigned(),
				Dir:         d,
				Trust:       trustShown{Mode: tr.Mode()},
			}
			for _, c := range tr.CAs() {
				s.Trust.CAs = append(s.Trust.CAs, c.Subject.CommonName)
			}
			for _, c := range tr.Pinned() {
				s.Trust.Pinned = append(s.Trust.Pinned, certLabel(c))
			}
			if p := tr.Pins(); p != nil {
				s.Trust.Pins = p.Len()
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printIdentity(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func printIdentity(w io.Writer, s identityShow) {
	name := s.Name
	if name == "" {
		name = "(none: not issued by a group CA)"
	}
	issuer := s.Issuer
	if s.SelfSigned {
		issuer = "self-signed"
	}
	trust := fmt.Sprintf("trust-on-first-use, %d nodes pinned", s.Trust.Pins)
	if s.Trust.Mode != "tofu" {
		var parts []string
		if len(s.Trust.CAs) > 0 {
			parts = append(parts, "CAs "+strings.Join(s.Trust.CAs, ", "))
		}
		if len(s.Trust.Pinned) > 0 {
			parts = append(parts, "certificates of "+strings.Join(s.Trust.Pinned, "; "))
		}
		trust = strings.Join(parts, "; and ")
	}
	fmt.Fprintf(w, "node:        %s\n", s.NodeID)
	fmt.Fprintf(w, "name:        %s\n", name)
	fmt.Fprintf(w, "fingerprint: %s\n", s.Fingerprint)
	fmt.Fprintf(w, "valid:       %s to %s\n", s.NotBefore.Format(time.RFC3339), s.NotAfter.Format(time.RFC3339))
	fmt.Fprintf(w, "issuer:      %s\n", issuer)
	fmt.Fprintf(w, "trust:       %s\n", trust)
	fmt.Fprintf(w, "directory:   %s\n", s.Dir)
}

// writeOutput writes data to the file named by the -o flag, or to standard
// output for "-".
func writeOutput(cmd *cobra.Command, path string, data []byte) error {
	if path == "-" || path == "" {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
