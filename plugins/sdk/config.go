package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/mulegate/mulegate/plugins"
)

// DecodeConfig decodes an adapter's JSON configuration block into dst, a
// pointer to a struct whose fields carry `json` tags, strictly: every key
// must name a field exactly (case included). It does not stop at the first
// problem; it returns all of them as plugins.ConfigErrors, each naming its
// key by dotted path ("tls.ca_file", "servers[2]"), or nil. Fields whose
// keys are absent keep the values dst already had, so set defaults first.
func DecodeConfig(raw json.RawMessage, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		// A programming error in the adapter, not a configuration problem.
		panic(fmt.Sprintf("sdk.DecodeConfig: dst must be a non-nil pointer to a struct, not %T", dst))
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("{}")
	}
	var errs plugins.ConfigErrors
	decodeObject(raw, rv.Elem(), "", &errs)
	return errs.Err()
}

// DecodeConfigErrors is DecodeConfig for an adapter that validates its
// block further: it returns the problems decoding found, for the
// validation to add its own to (and to skip the keys already there, with
// errs.Has), so that an operator fixes the whole block in one go. ok is
// false when the block as a whole is unusable (not a JSON object, say):
// then there is nothing to validate, and errs is the answer.
//
//	cfg := defaults()
//	errs, ok := sdk.DecodeConfigErrors(raw, &cfg)
//	if !ok {
//		return errs
//	}
//	if !errs.Has("url") && !validURL(cfg.URL) {
//		errs = errs.Add("url", "must be an http:// or https:// URL, not %q", cfg.URL)
//	}
//	if err := errs.Err(); err != nil {
//		return err
//	}
func DecodeConfigErrors(raw json.RawMessage, dst any) (errs plugins.ConfigErrors, ok bool) {
	if err := DecodeConfig(raw, dst); err != nil && !errors.As(err, &errs) {
		errs = plugins.ConfigErrors{{Message: err.Error()}} // DecodeConfig returns no other error
	}
	return errs, !errs.Has("")
}

// decodeObject decodes the JSON object raw into the struct v, field by
// field, so that one bad value does not hide the next.
func decodeObject(raw []byte, v reflect.Value, path string, errs *plugins.ConfigErrors) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
		msg := "must be a JSON object"
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			msg = fmt.Sprintf("is not valid JSON: %v (at byte %d)", syn, syn.Offset)
		case errors.Is(err, io.ErrUnexpectedEOF):
			msg = "is not valid JSON: it ends in the middle"
		case err == nil && obj != nil:
			msg = "has data after the JSON object"
		}
		*errs = errs.Add(path, "%s", msg)
		return
	}
	fields := structFields(v.Type())
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		at := join(path, key)
		index, ok := fields[key]
		if !ok {
			*errs = errs.Add(at, "unknown key%s", suggest(key, fields))
			continue
		}
		fv, err := v.FieldByIndexErr(index)
		if err != nil {
			// An embedded struct pointer that is nil: allocate it.
			fv = allocFieldByIndex(v, index)
		}
		decodeValue(obj[key], fv, at, errs)
	}
}

// decodeValue decodes raw into v, descending into nested structs so their
// unknown keys are reported too.
func decodeValue(raw json.RawMessage, v reflect.Value, path string, errs *plugins.ConfigErrors) {
	if isObject(raw) && !implementsUnmarshaler(v) {
		switch {
		case v.Kind() == reflect.Struct:
			decodeObject(raw, v, path, errs)
			return
		case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct && !implementsUnmarshaler(reflect.New(v.Type().Elem()).Elem()):
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			decodeObject(raw, v.Elem(), path, errs)
			return
		}
	}
	if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
		*errs = append(*errs, valueError(path, err))
	}
}

func valueError(path string, err error) plugins.ConfigError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		at := path
		if te.Field != "" {
			at = join(path, te.Field)
		}
		return plugins.ConfigError{Key: at, Message: fmt.Sprintf("must be %s, not %s", describeType(te.Type), te.Value)}
	}
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return plugins.ConfigError{Key: path, Message: fmt.Sprintf("is not valid JSON: %v", syn)}
	}
	return plugins.ConfigError{Key: path, Message: err.Error()}
}

func describeType(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return `a duration such as "30s" or "5m"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number ≥ 0 (and not too large)"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return describeType(t.Elem())
	}
	return t.String()
}

// structFields maps each JSON key of a struct type to its field index,
// following encoding/json's rules for tags and embedded structs.
func structFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			index := append(slices.Clone(prefix), i)
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
				walk(ft, index)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := out[name]; !dup || len(index) < len(out[name]) {
				out[name] = index
			}
		}
	}
	walk(t, nil)
	return out
}

func allocFieldByIndex(v reflect.Value, index []int) reflect.Value {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v
}

func implementsUnmarshaler(v reflect.Value) bool {
	u := reflect.TypeFor[json.Unmarshaler]()
	return v.Type().Implements(u) || reflect.PointerTo(v.Type()).Implements(u)
}

func isObject(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the known key closest to an unknown one, for the typo that
// is the usual cause.
func suggest(key string, fields map[string][]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(name)); d < bestDist || (d == bestDist && best != "" && name < best) {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	known := make([]string, 0, len(fields))
	for name := range fields {
		known = append(known, name)
	}
	slices.Sort(known)
	if len(known) == 0 {
		return "; this adapter takes no configuration"
	}
	return "; known keys: " + strings.Join(known, ", ")
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Duration is a time.Duration written in configuration as a string such as
// "30s", "5m" or "1h30m".
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`must be a duration such as "30s" or "5m", not %s`, b)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf(`must be a duration such as "30s" or "5m", not %q`, s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}
