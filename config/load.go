package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Default returns the embedded defaults, with node and data_dir resolved.
func Default() (*Config, error) {
	c := &Config{}
	if err := decodeStrict(defaultsYAML, "embedded defaults", c); err != nil {
		return nil, err
	}
	c.resolve()
	return c, nil
}

// Load builds the configuration from the embedded defaults, then the file
// at path (if path is not empty), then MULEGATE_* environment variables
// from environ. It does not validate: apply flags, then call Validate.
func Load(path string, environ []string) (*Config, error) {
	c := &Config{}
	if err := decodeStrict(defaultsYAML, "embedded defaults", c); err != nil {
		return nil, err
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading configuration: %w", err)
		}
		if err := decodeStrict(data, path, c); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(c, environ); err != nil {
		return nil, err
	}
	c.resolve()
	return c, nil
}

// resolve fills the values that depend on the machine.
func (c *Config) resolve() {
	if c.Node == "" {
		c.Node = defaultNode()
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir()
	}
	for i := range c.Adapters {
		if c.Adapters[i].MaxInFlight == 0 {
			c.Adapters[i].MaxInFlight = DefaultMaxInFlight
		}
	}
	if c.PluginDir == "" {
		c.PluginDir = c.DataDir + "/plugins"
	}
}

// Expanded returns a copy with {node} and {data_dir} expanded in route
// patterns, signature patterns and adapter configuration blocks. Call it
// after flags are applied and before Validate.
func (c *Config) Expanded() *Config {
	out := *c
	out.Routes = make([]Route, len(c.Routes))
	for i, r := range c.Routes {
		r.Match = c.Expand(r.Match)
		out.Routes[i] = r
	}
	out.Adapters = make([]Adapter, len(c.Adapters))
	for i, a := range c.Adapters {
		if a.Config != nil {
			a.Config = c.ExpandAny(a.Config).(map[string]any)
		}
		out.Adapters[i] = a
	}
	out.Signatures.RequireFor = make([]string, len(c.Signatures.RequireFor))
	for i, p := range c.Signatures.RequireFor {
		out.Signatures.RequireFor[i] = c.Expand(p)
	}
	return &out
}

// Expand replaces {node} and {data_dir} in s. {node} is the node ID
// with its trailing slash, so "{node}outbox/**" is dtn://n/outbox/**.
func (c *Config) Expand(s string) string {
	node := c.Node
	if id, err := c.NodeID(); err == nil {
		node = id.String()
	}
	return strings.NewReplacer("{node}", node, "{data_dir}", c.DataDir).Replace(s)
}

// ExpandAny applies Expand to every string inside an adapter's
// configuration block.
func (c *Config) ExpandAny(v any) any {
	switch x := v.(type) {
	case string:
		return c.Expand(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = c.ExpandAny(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = c.ExpandAny(e)
		}
		return out
	}
	return v
}

// Marshal prints the configuration as YAML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// decodeStrict decodes YAML over c, refusing unknown keys and wrong types
// with errors that name the key path and line.
func decodeStrict(data []byte, source string, c *Config) error {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return fmt.Errorf("%s: %w", source, err)
	}
	if len(root.Content) == 0 {
		return nil
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: the configuration must be a mapping of keys", source)
	}
	var errs Errors
	checkKeys(doc, reflect.TypeOf(*c), "", &errs)
	if len(errs) > 0 {
		return fmt.Errorf("%s:\n%w", source, errs)
	}
	if err := doc.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%s: %s", source, strings.Join(te.Errors, "; "))
		}
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// checkKeys walks a YAML mapping against a struct type and reports every
// key the struct does not have. Free-form blocks (map[string]…) are not
// checked: adapters validate their own.
func checkKeys(n *yaml.Node, t reflect.Type, prefix string, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type error
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if prefix != "" {
				key = prefix + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &Error{Key: key, Msg: fmt.Sprintf("unknown key (line %d); known keys here: %s", k.Line, strings.Join(sortedKeys(fields), ", "))})
				continue
			}
			checkKeys(v, ft, key, errs)
			checkScalar(v, ft, key, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			key := fmt.Sprintf("%s[%d]", prefix, i)
			checkKeys(item, t.Elem(), key, errs)
			checkScalar(item, t.Elem(), key, errs)
		}
	}
}

// checkScalar decodes a scalar value on its own, so that a type error names
// its key rather than only a line number.
func checkScalar(n *yaml.Node, t reflect.Type, key string, errs *Errors) {
	switch t.Kind() {
	case reflect.Struct, reflect.Slice, reflect.Map, reflect.Interface:
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msg = strings.Join(te.Errors, "; ")
		}
		*errs = append(*errs, &Error{Key: key, Msg: msg})
	}
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// applyEnv overrides scalar keys from MULEGATE_<PATH> variables. Lists and
// adapter blocks are not settable from the environment; a variable that
// names no key is an error, so a typo is not silently ignored.
func applyEnv(c *Config, environ []string) error {
	leaves := map[string]reflect.Value{}
	collectLeaves(reflect.ValueOf(c).Elem(), "", leaves)
	var errs Errors
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "MULEGATE_") {
			continue
		}
		if ignoredEnv[name] {
			continue
		}
		key := strings.ToLower(strings.TrimPrefix(name, "MULEGATE_"))
		v, ok := leaves[key]
		if !ok {
			errs = append(errs, &Error{Key: name, Msg: "names no configuration key"})
			continue
		}
		if err := setScalar(v, value); err != nil {
			errs = append(errs, &Error{Key: name, Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// ignoredEnv are MULEGATE_ variables that are not configuration keys.
var ignoredEnv = map[string]bool{
	"MULEGATE_API":       true, // read by the CLI: which node to talk to
	"MULEGATE_API_TOKEN": true, // read by the CLI
	"MULEGATE_TOOLS_BIN": true, // where the tests find their servers
}

// collectLeaves maps env-style keys (path with underscores) to settable
// scalar fields.
func collectLeaves(v reflect.Value, prefix string, out map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "_" + name
		}
		fv := v.Field(i)
		switch fv.Kind() {
		case reflect.Struct:
			collectLeaves(fv, key, out)
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint64:
			out[key] = fv
		}
	}
}

func setScalar(v reflect.Value, s string) error {
	switch {
	case v.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 30s or 5m", s)
		}
		v.SetInt(int64(d))
	case v.Type() == reflect.TypeOf(ByteSize(0)):
		n, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		v.SetUint(uint64(n))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case v.Kind() == reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer", s)
		}
		v.SetUint(n)
	}
	return nil
}
