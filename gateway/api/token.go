package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the API token's file name in the data directory.
const TokenFile = "api.token"

// TokenEnv is the environment variable a client may take the token from
// instead of the data directory.
const TokenEnv = "MULEGATE_API_TOKEN"

// TokenPath is where the node in dataDir keeps its API token.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, TokenFile) }

// LoadOrCreateToken returns the API token kept in dataDir, making one (256
// random bits, hex) with mode 0600 on first run. A token file that others
// can read is tightened to 0600; tightened reports that it was.
func LoadOrCreateToken(dataDir string) (token string, tightened bool, err error) {
	path := TokenPath(dataDir)
	token, err = ReadToken(dataDir)
	switch {
	case err == nil:
		st, serr := os.Stat(path)
		if serr != nil {
			return "", false, serr
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return "", false, fmt.Errorf("%s can be read by others, and making it private failed: %w", path, err)
			}
			return token, true, nil
		}
		return token, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("creating the data directory for the API token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, err
	}
	token = hex.EncodeToString(raw[:])
	// Write it under a temporary name and link it into place, so that two
	// processes starting at once agree on one token and no reader ever sees
	// a half-written file.
	tmp, err := os.CreateTemp(dataDir, ".api.token-*")
	if err != nil {
		return "", false, fmt.Errorf("creating the API token: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, err
	}
	if _, err := tmp.WriteString(token + "\n"); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, err
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			t, rerr := ReadToken(dataDir)
			return t, false, rerr
		}
		return "", false, fmt.Errorf("creating the API token: %w", err)
	}
	return token, false, nil
}

// ReadToken reads the API token kept in dataDir.
func ReadToken(dataDir string) (string, error) {
	data, err := os.ReadFile(TokenPath(dataDir))
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(data))
	if t == "" {
		return "", fmt.Errorf("%s is empty: delete it and restart the node to make a new token", TokenPath(dataDir))
	}
	return t, nil
}
