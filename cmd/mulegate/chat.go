package main

import (
	"fmt"
	"path/filepath"

	"github.com/mulegate/mulegate/cmd/mulegate/chat"
	"github.com/mulegate/mulegate/gateway/api"
	"github.com/spf13/cobra"
)

func newChatCmd() *cobra.Command {
	var (
		cf       clientFlags
		group    string
		incoming string
		lifetime string
	)
	cmd := &cobra.Command{
		Use:   "chat --group NAME",
		Short: "Chat with a group of friends, each running a node, with no infrastructure",
		Long: `Chat with a group: every member runs a node and 'mulegate chat --group NAME'.
Messages go to the group endpoint dtn://~NAME/chat, which each member's node
registers; nodes carry them to each other whenever they meet, directly or
through mules, so a message may arrive long after it was written. Each line
shows when it was written, the sending node's name, the hops it took and its
age on arrival.

Commands: /share FILE sends a file (receivers save it in their incoming
directory, under a safe name, never overwriting), /history [N], /peers,
/help, /quit.

Messages are signed by the sending node; ✓ marks those whose signature this
node verified (with a group CA: the member name). Others show (unverified).`,
		Example: `  mulegate chat --group campfire
  mulegate chat --group campfire --incoming ~/Downloads/campfire`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := chat.Endpoint(group); err != nil {
				return fmt.Errorf("--group: %w", err)
			}
			life, err := api.ParseDuration(lifetime)
			if err != nil {
				return fmt.Errorf("--lifetime: %w", err)
			}
			c, addr, err := cf.client()
			if err != nil {
				return err
			}
			_, dataDir, err := cf.resolve()
			if err != nil {
				return err
			}
			dir := filepath.Join(dataDir, "chat", group)
			if incoming == "" {
				incoming = filepath.Join(dir, "incoming")
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			err = chat.Run(ctx, chat.Options{
				Client: c, Group: group, Incoming: incoming, History: filepath.Join(dir, "history.jsonl"),
				Lifetime: life, In: cmd.InOrStdin(), Out: cmd.OutOrStdout(),
			})
			return explain(err, addr)
		},
	}
	cf.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&group, "group", "", "the group's `name`: its endpoint is dtn://~NAME/chat")
	fl.StringVar(&incoming, "incoming", "", "`directory` shared files are saved in (default DATA/chat/NAME/incoming)")
	fl.StringVar(&lifetime, "lifetime", "7d", "how long messages are worth carrying")
	_ = cmd.MarkFlagRequired("group")
	return cmd
}
