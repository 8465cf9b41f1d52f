//! What each of signal-cli's answers means for the outbox.
//!
//! Read from signal-cli 0.13.19's source: `JsonRpcResponse.Error` (the
//! JSON-RPC codes), `SignalJsonRpcCommandHandler` (account selection and
//! how a command's exception becomes a code), `JsonRpcReader` and
//! `HttpServerHandler` (what cannot be read), `SendCommand` and
//! `SendMessageResultUtils` (what a send throws), the `manager.api`
//! exceptions (their messages); checked against the real daemon where it
//! answers without an account (the codes for a missing or unknown account,
//! the string limit).
//!
//! | code | signal-cli's meaning | typical message | outbox |
//! |---|---|---|---|
//! | -32700 | parse error (`JsonRpcReader`) | `Empty input line`, Jackson's parser message | permanent: the same bytes fail again |
//! | -32600 | invalid request: the params do not bind (`JsonMappingException`) | `Cannot deserialize value of type …` | permanent |
//! | -32601 | method not found (or not on this transport: `subscribeReceive` over HTTP) | `Method not implemented` | permanent |
//! | -32602 | invalid params: the account selection | `Method requires valid account parameter`, `Specified account does not exist` | account down: the daemon does not serve the account until an admin registers or links it, or starts the daemon with it; `status` says which |
//! | -32603 | internal error: `UnexpectedErrorException` or any other exception, as `<message> (<Class>)` | `Failed to send message: … (IOException) (UnexpectedErrorException)` | retried: Signal's servers or the network failed |
//! | -32603 | the same, for a file signal-cli cannot read or decode | `Failed to send message: <file>: … (AttachmentInvalidException) (UnexpectedErrorException)` | permanent (a spooled file the daemon cannot open is retried inline, see the adapter) |
//! | -32603 | the same, for parameters Java cannot use | `… (ClassCastException)`, `(NullPointerException)`, `(IllegalArgumentException)`, `(NumberFormatException)` | permanent |
//! | -32603 | HTTP only: the request could not be read at all (e.g. a string over 20,000,000 characters) | `An internal server error has occurred.` (`id` null) | permanent |
//! | -32603 | anything else | `<message> (<Class>)` | retried (until `max_age`) |
//! | -1 | user error (`UserErrorException`) | `Group not found: …`, `User is not a member in group: …`, `User is not allowed to send message to group: …` | channel down: the account was removed from the group or may not write there; the lane waits and `status` shows the channel |
//! | -1 | every recipient failed, for mixed reasons (`data.response` lists them) | `Failed to send message` | retried when one failed for the network or a rate limit, else permanent |
//! | -1 | any other user error | `The user +… is not registered.`, `No recipients given`, `Invalid group id: …`, `Sending empty message is not allowed, …`, `Invalid style: …`, `Failed to send sticker: …` | permanent |
//! | -3 | IO error (`IOErrorException`) | `Unable to check if users are registered: …` | retried |
//! | -4 | every recipient has an untrusted identity key | `Failed to send message due to untrusted identities` | channel down until an admin trusts the new key (`signal-cli trust`) |
//! | -5 | rate limited; a captcha challenge when a result carries `token` | `Failed to send message due to rate limiting` | rate limit (waits `retryAfterSeconds` when given); a challenge pauses the account and `status` names the command |
//! | -6 | captcha rejected (0.14.3+, `submitRateLimitChallenge` only) | | permanent |
//! | none | the connection closed under the request (TCP, socket: also a string over 20,000,000 characters, which switchboard never sends) | | retried after the adapter reconnects |
//! | none | no answer within the request's time | | retried |
//! | none | not sent: a string signal-cli would refuse | | permanent |

use std::time::Duration;

use serde_json::Value;
use switchboard_core::SendError;

use crate::client::RpcError;

/// JSON-RPC's and signal-cli's codes.
pub mod code {
    /// The request could not be parsed.
    pub const PARSE_ERROR: i64 = -32700;
    /// The request's params do not bind.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (on this transport).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The account selection failed.
    pub const INVALID_PARAMS: i64 = -32602;
    /// An exception inside the command.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `UserErrorException`.
    pub const USER_ERROR: i64 = -1;
    /// `IOErrorException`.
    pub const IO_ERROR: i64 = -3;
    /// `UntrustedKeyErrorException`.
    pub const UNTRUSTED_KEY: i64 = -4;
    /// `RateLimitErrorException`.
    pub const RATE_LIMIT: i64 = -5;
    /// `CaptchaRejectedErrorException` (0.14.3+).
    pub const CAPTCHA_REJECTED: i64 = -6;
}

/// Java exceptions that mean the parameters were unusable: retrying the
/// same request cannot help.
const BAD_PARAMETERS: [&str; 5] = [
    "(ClassCastException)",
    "(NullPointerException)",
    "(IllegalArgumentException)",
    "(NumberFormatException)",
    "(AttachmentInvalidException)",
];

/// What the outbox should do after a failed request; `account` is the
/// account's number, for the messages that tell an admin what to run.
#[must_use]
pub fn classify(e: RpcError, account: &str) -> SendError {
    let text = e.to_string();
    match e {
        RpcError::Remote {
            code,
            message,
            data,
            ..
        } => classify_remote(code, &message, &data, text, account),
        // The connection dropped under a request in flight: retried once the
        // receive loop has reconnected.
        RpcError::Closed(_) | RpcError::Timeout(_) => SendError::transient(text, None),
        RpcError::TooLarge(_) => SendError::permanent(text),
    }
}

fn classify_remote(
    code: i64,
    message: &str,
    data: &Value,
    text: String,
    account: &str,
) -> SendError {
    let results: Vec<&Value> = data
        .pointer("/response/results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let retry_after = results
        .iter()
        .filter_map(|r| r.get("retryAfterSeconds").and_then(Value::as_u64))
        .max()
        .map(Duration::from_secs);
    if results.iter().any(|r| r.get("token").is_some()) {
        return SendError::account_down(
            format!(
                "{text}: Signal asks for a captcha; solve one at https://signalcaptchas.org/challenge/generate and submit it with `signal-cli -a {account} submitRateLimitChallenge --challenge <token> --captcha <captcha>`"
            ),
            retry_after,
        );
    }
    match code {
        code::INVALID_PARAMS => SendError::account_down(
            format!("{text}: {}", missing_account_fix(account)),
            None,
        ),
        code::INTERNAL_ERROR => {
            let unreadable = message == "An internal server error has occurred.";
            if unreadable || BAD_PARAMETERS.iter().any(|c| message.contains(c)) {
                SendError::permanent(text)
            } else {
                SendError::transient(text, None)
            }
        }
        code::USER_ERROR => {
            let channel = ["Group not found: ", "User is not a member in group: ", "User is not allowed to send message to group: "];
            if channel.iter().any(|p| message.starts_with(p)) {
                return SendError::channel_down(text, None);
            }
            // Every recipient failed: worth retrying when one failed for
            // the network or a rate limit.
            let retryable = results.iter().any(|r| {
                matches!(
                    r.get("type").and_then(Value::as_str),
                    Some("NETWORK_FAILURE" | "RATE_LIMIT_FAILURE")
                )
            });
            if retryable {
                SendError::transient(text, retry_after)
            } else {
                SendError::permanent(text)
            }
        }
        code::IO_ERROR => SendError::transient(text, None),
        code::UNTRUSTED_KEY => SendError::channel_down(
            format!(
                "{text}: a recipient's safety number changed; after checking it, run `signal-cli -a {account} trust --trust-all-known-keys <recipient>`"
            ),
            None,
        ),
        // Without the daemon's hint (0.13.x gives none for a plain rate
        // limit), the outbox's doubling backoff spaces retries.
        code::RATE_LIMIT => SendError::rate_limited(text, retry_after),
        // -32700, -32600, -32601, -6 and codes unknown today.
        _ => SendError::permanent(text),
    }
}

/// What an admin does when the daemon does not serve the account.
#[must_use]
pub fn missing_account_fix(account: &str) -> String {
    format!(
        "signal-cli has no account {account}: register it (`signal-cli -a {account} register`, then `verify CODE`) or link it (`signal-cli link -n switchboard`) in the daemon's data directory, or start the daemon with it (`signal-cli -a {account} daemon …`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_core::RetryKind;

    const ME: &str = "+15550000001";

    fn remote(code: i64, message: &str, data: Value) -> RetryKind {
        classify(
            RpcError::Remote {
                code,
                message: message.into(),
                data,
            },
            ME,
        )
        .retry_kind()
    }

    fn transient() -> RetryKind {
        RetryKind::Transient { retry_after: None }
    }

    /// One assertion per row of the table above, with signal-cli 0.13.19's
    /// own messages (from its source; the -32602 and -32603 HTTP ones also
    /// seen from the real daemon).
    #[test]
    fn every_row_of_the_table() {
        assert_eq!(
            remote(-32700, "Empty input line", Value::Null),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(
                -32600,
                "Cannot deserialize value of type `java.util.LinkedHashMap`",
                Value::Null
            ),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(-32601, "Method not implemented", Value::Null),
            RetryKind::Permanent
        );
        for m in [
            "Method requires valid account parameter",
            "Specified account does not exist",
        ] {
            let e = classify(
                RpcError::Remote {
                    code: -32602,
                    message: m.into(),
                    data: Value::Null,
                },
                ME,
            );
            assert_eq!(e.retry_kind(), RetryKind::AccountDown { retry_after: None });
            assert!(e.message().contains("register"), "{}", e.message());
        }
        assert_eq!(
            remote(
                -32603,
                "Failed to send message: Connection reset (IOException) (UnexpectedErrorException)",
                Value::Null
            ),
            transient()
        );
        assert_eq!(
            remote(-32603, "Failed to send message: /x/a.bin: /x/a.bin (No such file or directory) (AttachmentInvalidException) (UnexpectedErrorException)", Value::Null),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(-32603, "class java.lang.Integer cannot be cast to class java.lang.Long (ClassCastException)", Value::Null),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(-32603, "Cannot invoke \"java.lang.Long.longValue()\" because \"targetTimestamp\" is null (NullPointerException)", Value::Null),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(
                -32603,
                "An internal server error has occurred.",
                Value::Null
            ),
            RetryKind::Permanent
        );
        assert_eq!(
            remote(
                -32603,
                "Failed read from recipient store (RuntimeException)",
                Value::Null
            ),
            transient()
        );
        for m in [
            "Group not found: mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=",
            "User is not a member in group: Lobby (mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=)",
            "User is not allowed to send message to group: Lobby (mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=)",
        ] {
            assert_eq!(remote(-1, m, Value::Null), RetryKind::ChannelDown { retry_after: None });
        }
        let mixed = json!({"response": {"results": [{"type": "NETWORK_FAILURE"}, {"type": "UNREGISTERED_FAILURE"}]}});
        assert_eq!(remote(-1, "Failed to send message", mixed), transient());
        let gone = json!({"response": {"results": [{"type": "UNREGISTERED_FAILURE"}, {"type": "IDENTITY_FAILURE"}]}});
        assert_eq!(
            remote(-1, "Failed to send message", gone),
            RetryKind::Permanent
        );
        for m in [
            "The user +15550000009 is not registered.",
            "No recipients given",
            "Invalid group id: Failed to decode base64",
            "Sending empty message is not allowed, either a message, attachment or sticker must be given.",
            "Invalid style: SHOUT",
            "Failed to send sticker: Sticker pack not found",
        ] {
            assert_eq!(remote(-1, m, Value::Null), RetryKind::Permanent, "{m}");
        }
        assert_eq!(
            remote(
                -3,
                "Unable to check if users are registered: timeout (IOException)",
                Value::Null
            ),
            transient()
        );
        let e = classify(
            RpcError::Remote {
                code: -4,
                message: "Failed to send message due to untrusted identities".into(),
                data: json!({"response": {"results": [{"type": "IDENTITY_FAILURE"}]}}),
            },
            ME,
        );
        assert_eq!(e.retry_kind(), RetryKind::ChannelDown { retry_after: None });
        assert!(e.message().contains("trust"), "{}", e.message());
        let rl = json!({"response": {"timestamp": 1, "results": [{"type": "RATE_LIMIT_FAILURE", "retryAfterSeconds": 42}]}});
        assert_eq!(
            remote(-5, "Failed to send message due to rate limiting", rl),
            RetryKind::Transient {
                retry_after: Some(Duration::from_secs(42))
            }
        );
        assert_eq!(
            remote(
                -5,
                "Failed to send message due to rate limiting",
                Value::Null
            ),
            transient()
        );
        let captcha = json!({"response": {"results": [{"type": "RATE_LIMIT_FAILURE", "token": "t", "retryAfterSeconds": 5}]}});
        assert_eq!(
            remote(-5, "Failed to send message due to rate limiting", captcha),
            RetryKind::AccountDown {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(
            remote(-6, "Captcha rejected", Value::Null),
            RetryKind::Permanent
        );
        assert_eq!(
            classify(RpcError::Closed("x".into()), ME).retry_kind(),
            transient()
        );
        assert_eq!(
            classify(RpcError::Timeout(Duration::from_secs(1)), ME).retry_kind(),
            transient()
        );
        assert_eq!(
            classify(RpcError::TooLarge("x".into()), ME).retry_kind(),
            RetryKind::Permanent
        );
    }
}
