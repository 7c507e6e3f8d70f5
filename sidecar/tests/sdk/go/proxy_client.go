// Calls the test Echo service through daprd with grpc-go, as a Go user of
// gRPC proxying would: a plain client connection to the sidecar plus one
// dapr-app-id header. Messages are written and read as protobuf by hand, so
// nothing is generated from the .proto.
//
// Usage: proxy_client <daprd gRPC port> <app-id>
// Prints "ok <check>" for each check that passes; exits non-zero on the first failure.
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// msg is daprs.test.v1.Msg: text = 1, data = 2, count = 3.
type msg struct {
	text  string
	data  []byte
	count uint64
}

func putVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func (m msg) encode() []byte {
	var b []byte
	if m.text != "" {
		b = append(putVarint(append(b, 0x0a), uint64(len(m.text))), m.text...)
	}
	if len(m.data) > 0 {
		b = append(putVarint(append(b, 0x12), uint64(len(m.data))), m.data...)
	}
	if m.count != 0 {
		b = putVarint(append(b, 0x18), m.count)
	}
	return b
}

func varint(b []byte) (uint64, []byte) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * uint(i))
		if c < 0x80 {
			return v, b[i+1:]
		}
	}
	return v, nil
}

func decode(b []byte) msg {
	var m msg
	for len(b) > 0 {
		var key, n uint64
		key, b = varint(b)
		switch key {
		case 0x0a, 0x12:
			n, b = varint(b)
			if uint64(len(b)) < n {
				return m
			}
			if key == 0x0a {
				m.text = string(b[:n])
			} else {
				m.data = append([]byte(nil), b[:n]...)
			}
			b = b[n:]
		case 0x18:
			m.count, b = varint(b)
		default:
			return m
		}
	}
	return m
}

// raw hands grpc-go the bytes written above, and back.
type raw struct{}

func (raw) Name() string { return "proto" }

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }

func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

func check(name string, ok bool, detail interface{}) {
	if !ok {
		fmt.Printf("FAILED %s: %v\n", name, detail)
		os.Exit(1)
	}
	fmt.Printf("ok %s\n", name)
}

const service = "/daprs.test.v1.Echo/"

func unary(ctx context.Context, conn *grpc.ClientConn, in msg, opts ...grpc.CallOption) (msg, error) {
	req, reply := in.encode(), []byte(nil)
	err := conn.Invoke(ctx, service+"Unary", &req, &reply, opts...)
	return decode(reply), err
}

func stream(ctx context.Context, conn *grpc.ClientConn, name string, client, server bool) grpc.ClientStream {
	desc := &grpc.StreamDesc{StreamName: name, ClientStreams: client, ServerStreams: server}
	s, err := conn.NewStream(ctx, desc, service+name)
	check(name+" opens", err == nil, err)
	return s
}

func send(s grpc.ClientStream, m msg) {
	b := m.encode()
	if err := s.SendMsg(&b); err != nil {
		check("send", false, err)
	}
}

func receiveAll(s grpc.ClientStream) ([]msg, error) {
	var got []msg
	for {
		var b []byte
		err := s.RecvMsg(&b)
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, decode(b))
	}
}

func main() {
	port, app := os.Args[1], os.Args[2]
	conn, err := grpc.Dial("127.0.0.1:"+port, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	check("connect", err == nil, err)
	defer conn.Close()
	base := metadata.Pairs("dapr-app-id", app, "x-echo", "go", "x-raw-bin", string([]byte{0, 0xff, 0x10}))
	ctx := metadata.NewOutgoingContext(context.Background(), base)

	var header, trailer metadata.MD
	reply, err := unary(ctx, conn, msg{text: "hi"}, grpc.Header(&header), grpc.Trailer(&trailer))
	check("unary", err == nil && strings.HasPrefix(reply.text, "hi|caller="), fmt.Sprint(reply.text, err))
	check("metadata", strings.Join(header.Get("x-echo"), ",") == "go", header)
	raw := header.Get("x-raw-bin")
	check("binary metadata", len(raw) == 1 && raw[0] == string([]byte{0, 0xff, 0x10}), raw)

	_, err = unary(ctx, conn, msg{text: "fail"})
	st, _ := status.FromError(err)
	check("error status", st.Code() == codes.FailedPrecondition && st.Message() == "the app refused", err)
	// grpc-go reads the status from grpc-status-details-bin, which came through unchanged.
	check("error details", st.Proto().GetCode() == int32(codes.FailedPrecondition), st.Proto())

	s := stream(ctx, conn, "ServerStream", false, true)
	send(s, msg{count: 100, data: bytes.Repeat([]byte("x"), 10)})
	check("server close", s.CloseSend() == nil, "")
	got, err := receiveAll(s)
	inOrder := len(got) == 100
	for i, m := range got {
		inOrder = inOrder && m.count == uint64(i)
	}
	check("server streaming", err == nil && inOrder, fmt.Sprint(len(got), err))

	s = stream(ctx, conn, "ClientStream", true, false)
	for i := 0; i < 3; i++ {
		send(s, msg{text: fmt.Sprint(i)})
	}
	check("client close", s.CloseSend() == nil, "")
	got, err = receiveAll(s)
	check("client streaming", err == nil && len(got) == 1 && got[0].count == 3 && strings.HasPrefix(got[0].text, "012"), fmt.Sprint(got, err))

	// Each message is answered before the next is sent: the two directions interleave.
	s = stream(ctx, conn, "Bidi", true, true)
	for _, t := range []string{"a", "b"} {
		send(s, msg{text: t})
		var b []byte
		err := s.RecvMsg(&b)
		check("bidirectional streaming "+t, err == nil && decode(b).text == "echo:"+t, fmt.Sprint(decode(b).text, err))
	}
	check("bidi close", s.CloseSend() == nil, "")
	got, err = receiveAll(s)
	check("bidirectional streaming", err == nil && len(got) == 0, fmt.Sprint(got, err))

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = unary(short, conn, msg{text: "sleep"})
	cancel()
	check("deadline", status.Code(err) == codes.DeadlineExceeded, err)

	nobody := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("dapr-app-id", "nobody-serves-this"))
	soon, cancel := context.WithTimeout(nobody, 5*time.Second)
	_, err = unary(soon, conn, msg{text: "x"})
	cancel()
	check("unknown app", status.Code(err) == codes.Unavailable, err)
}
