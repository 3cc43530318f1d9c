package lab

import "github.com/hopcheck/hopcheck/internal/amqp"

// LabConnectionStart is the Connection.Start the lab broker sends.
func LabConnectionStart() amqp.Start {
	return amqp.Start{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: []amqp.Field{
			{Name: "product", Value: "hopcheck lab"},
			{Name: "platform", Value: "Go"},
			{Name: "capabilities", Value: []amqp.Field{{Name: "authentication_failure_close", Value: true}}},
		},
		Mechanisms: "PLAIN",
		Locales:    "en_US",
	}
}
