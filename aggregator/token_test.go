package aggregator

import (
	"bytes"
	"errors"
	"testing"
)

// Processes that share a token key (sharded replicas: SetTokenKey) verify each other's
// tokens; with another key a token is refused.
func TestSetTokenKeySharesTokensBetweenProcesses(t *testing.T) {
	saved := tokenKey.Load()
	t.Cleanup(func() { tokenKey.Store(saved) })
	shared := bytes.Repeat([]byte{7}, 32)
	SetTokenKey(shared)
	tok := SignToken([]byte(`{"after":"c/x"}`))
	SetTokenKey(bytes.Repeat([]byte{8}, 32)) // a process of another group
	if _, err := VerifyToken(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a token verified under another key: %v", err)
	}
	SetTokenKey(shared) // another process of the same group
	if raw, err := VerifyToken(tok); err != nil || string(raw) != `{"after":"c/x"}` {
		t.Errorf("a token of the same key: %q, %v", raw, err)
	}
	shared[0] = 9 // the caller's slice is copied
	if _, err := VerifyToken(tok); err != nil {
		t.Errorf("SetTokenKey kept the caller's slice: %v", err)
	}
}
