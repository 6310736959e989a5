package fleet_test

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A log shipper or Kafka bridge reads the events stream with a durable
// consumer of its own: after a restart it resumes after the last event it
// acknowledged, and Nats-Msg-Id (HOST:BOOT:SEQ) keys what it writes, so a
// redelivery is harmless. This is the code of README.md's Fleet section.
func Example_shipper() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://ops:ops-secret@127.0.0.1:4222")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	if err := shipper(ctx, nc, func(id string, data []byte) { fmt.Printf("%s %s\n", id, data) }); err != nil {
		fmt.Println(err)
	}
}

func shipper(ctx context.Context, nc *nats.Conn, ship func(id string, data []byte)) error {
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(ctx, "TCPOPS_EVENTS", jetstream.ConsumerConfig{
		Durable: "shipper", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "tcpops.events.>"})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ship(m.Headers().Get("Nats-Msg-Id"), m.Data()) // to Kafka, a file, a database
		m.Ack()
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}
