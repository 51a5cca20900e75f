//! Names and outcomes of application request/response protocols.
//!
//! Every application protocol travels inside one libp2p protocol (`/agentmesh/rr/2`), named
//! in each request frame; the frames themselves are in the (private) `rr` module.

/// Longest application protocol name.
pub const MAX_PROTOCOL_NAME: usize = 64;

/// How a responder answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The payload is the answer.
    Ok,
    /// No handler for the protocol.
    UnknownProtocol,
    /// The handler refused; the payload is a UTF-8 reason.
    Refused,
}

/// A response as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireResponse {
    /// Outcome.
    pub status: Status,
    /// Payload.
    pub data: Vec<u8>,
}

/// Checks an application protocol name: 1 to 64 of `[a-z0-9/._-]`.
pub fn valid_protocol_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROTOCOL_NAME
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_are_checked() {
        assert!(valid_protocol_name("mesh/deliver"));
        assert!(!valid_protocol_name(""));
        assert!(!valid_protocol_name("Echo"));
        assert!(!valid_protocol_name(&"a".repeat(65)));
    }
}
