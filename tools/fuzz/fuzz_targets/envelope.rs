//! Envelope parsing: any bytes either parse into a valid event, which
//! serialises and parses back to itself, or are refused with an error.
#![no_main]

use common::wire::{Event, EventInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::from_slice(data) {
        let bytes = event.to_vec();
        assert_eq!(Event::from_slice(&bytes).expect("round trip"), event);
    }
    if let Ok(input) = serde_json::from_slice::<EventInput>(data)
        && let Ok(event) = input.into_event()
    {
        event.validate().expect("into_event only gives valid events");
    }
});
