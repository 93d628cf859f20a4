// Package integration drives kvproxy with a real Go Redis client (redigo).
//
// The proxy address comes from KVPROXY_ADDR; the project's test command
// (tests/test_go.py) starts redis-server and kvproxy and sets it.
package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
)

func dial(t *testing.T) redis.Conn {
	t.Helper()
	addr := os.Getenv("KVPROXY_ADDR")
	if addr == "" {
		t.Skip("KVPROXY_ADDR is not set: run through the project's test command")
	}
	conn, err := redis.Dial("tcp", addr, redis.DialReadTimeout(10*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// fieldMap reads a field/value reply whose values mix strings and integers.
func fieldMap(t *testing.T, conn redis.Conn, command string, args ...interface{}) map[string]interface{} {
	t.Helper()
	values, err := redis.Values(conn.Do(command, args...))
	require.NoError(t, err)
	require.Equal(t, 0, len(values)%2)
	fields := make(map[string]interface{}, len(values)/2)
	for i := 0; i < len(values); i += 2 {
		key, err := redis.String(values[i], nil)
		require.NoError(t, err)
		switch value := values[i+1].(type) {
		case []byte:
			fields[key] = string(value)
		default:
			fields[key] = value
		}
	}
	return fields
}

func TestPipelinedSetGet(t *testing.T) {
	conn := dial(t)
	const n = 2000
	for i := 0; i < n; i++ {
		require.NoError(t, conn.Send("SET", fmt.Sprintf("go:%d", i), i))
		require.NoError(t, conn.Send("GET", fmt.Sprintf("go:%d", i)))
	}
	require.NoError(t, conn.Flush())
	for i := 0; i < n; i++ {
		ok, err := redis.String(conn.Receive())
		require.NoError(t, err)
		require.Equal(t, "OK", ok)
		value, err := redis.Int(conn.Receive())
		require.NoError(t, err)
		require.Equal(t, i, value)
	}
}

func TestMultiExec(t *testing.T) {
	conn := dial(t)
	_, err := conn.Do("DEL", "go:tx")
	require.NoError(t, err)
	require.NoError(t, conn.Send("MULTI"))
	require.NoError(t, conn.Send("INCR", "go:tx"))
	require.NoError(t, conn.Send("INCRBY", "go:tx", 41))
	replies, err := redis.Values(conn.Do("EXEC"))
	require.NoError(t, err)
	require.Equal(t, []interface{}{int64(1), int64(42)}, replies)
}

func TestPubSub(t *testing.T) {
	sub := redis.PubSubConn{Conn: dial(t)}
	require.NoError(t, sub.Subscribe("go:news"))
	confirmed := sub.Receive()
	require.IsType(t, redis.Subscription{}, confirmed)
	time.Sleep(200 * time.Millisecond) // idle while the message is published

	count, err := redis.Int(dial(t).Do("PUBLISH", "go:news", "hello"))
	require.NoError(t, err)
	require.Equal(t, 1, count)

	switch message := sub.Receive().(type) {
	case redis.Message:
		require.Equal(t, "go:news", message.Channel)
		require.Equal(t, "hello", string(message.Data))
	default:
		t.Fatalf("expected a message, got %#v", message)
	}
	require.NoError(t, sub.Unsubscribe())
}

func TestKvcloudStatusAndHelp(t *testing.T) {
	conn := dial(t)
	status := fieldMap(t, conn, "KVCLOUD", "STATUS")
	require.Equal(t, "idle", status["state"])
	require.Equal(t, int64(0), status["bytes_done"])
	for _, field := range []string{"operation", "backup_id", "started_at", "finished_at", "error"} {
		require.Contains(t, status, field)
	}

	help, err := redis.Strings(conn.Do("kvcloud", "help"))
	require.NoError(t, err)
	joined := strings.Join(help, "\n")
	for _, sub := range []string{"UPLOAD", "RESTORE", "STATUS", "CONFIG", "REFRESH", "LIST",
		"VERIFY", "CANCEL", "PRUNE", "HELP"} {
		require.Contains(t, joined, "KVCLOUD "+sub)
	}

	// A local reply keeps its place between forwarded ones.
	require.NoError(t, conn.Send("SET", "go:order", "1"))
	require.NoError(t, conn.Send("KVCLOUD", "STATUS"))
	require.NoError(t, conn.Send("GET", "go:order"))
	require.NoError(t, conn.Flush())
	ok, err := redis.String(conn.Receive())
	require.NoError(t, err)
	require.Equal(t, "OK", ok)
	_, err = redis.Values(conn.Receive())
	require.NoError(t, err)
	value, err := redis.String(conn.Receive())
	require.NoError(t, err)
	require.Equal(t, "1", value)
}
