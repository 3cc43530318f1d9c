package lab

import "github.com/hopcheck/hopcheck/internal/amqp"

// rabbitMQServerCapabilities are the capabilities a RabbitMQ 3.x broker
// announces in Connection.Start's server-properties.
var rabbitMQServerCapabilities = []string{
	"publisher_confirms",
	"exchange_exchange_bindings",
	"basic.nack",
	"consumer_cancel_notify",
	"connection.blocked",
	"consumer_priorities",
	"authentication_failure_close",
	"per_consumer_qos",
	"direct_reply_to",
}

// LabConnectionStart is the Connection.Start the lab broker sends: the
// capabilities of a RabbitMQ 3.x broker, its own product name.
func LabConnectionStart() amqp.Start {
	caps := make([]amqp.Field, 0, len(rabbitMQServerCapabilities))
	for _, c := range rabbitMQServerCapabilities {
		caps = append(caps, amqp.Field{Name: c, Value: true})
	}
	return amqp.Start{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: []amqp.Field{
			{Name: "product", Value: "hopcheck lab"},
			{Name: "platform", Value: "Go"},
			{Name: "capabilities", Value: caps},
		},
		Mechanisms: "PLAIN",
		Locales:    "en_US",
	}
}
