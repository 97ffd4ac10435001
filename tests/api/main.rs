//! The end-to-end tests: the services against the real RabbitMQ, in this
//! process or as processes, each test on queues of its own. One binary,
//! so the suite links once and its tests run side by side.

mod bad_input;
mod broker;
mod connections;
mod faults;
mod live;
mod overload;
mod prime;
mod python_listener;
mod round_trip;
mod scenario;
mod telemetry;
mod trust;
mod webhooks;
