package rpc

// MethodDiscover answers with the OpenRPC document of every method
// (https://spec.open-rpc.org/#service-discovery-method).
const MethodDiscover = "rpc.discover"

// APIVersion is the version of the control socket's interface as the
// OpenRPC document gives it: the major number changes when a method, param
// or result field is renamed or removed, the minor one when one is added.
const APIVersion = "2.0.0"
