//! The sans-IO half of gRPC over a WebRTC data channel on the client side: turning a tonic
//! request (HTTP/2-shaped: headers, a body of 5-byte-prefixed messages, `grpc-timeout`) into
//! what the data-channel protocol carries (metadata, bare messages, a timeout), and the
//! machine's answers (metadata, bare messages, a status) back into what tonic reads.
//!
//! No tasks, no channels, no clocks: every rule here is unit-tested exactly.

use std::time::Duration;

use http::HeaderMap;
use tether_rpc::framing::{Metadata, parse_grpc_timeout};
use tether_rpc::grpc::{SplitError, is_transport_header};
use tether_rpc::metadata::{OnInvalid, headers_to_metadata, metadata_to_headers};
use tether_rpc::vocabulary::{AUTHORIZATION_HEADER, GRPC_TIMEOUT_HEADER};

/// The call's metadata from tonic's request headers: every header except the hop-by-hop ones,
/// values grouped by name, names in order. `-bin` values are already base64 in HTTP and travel
/// as they are. Values that are not visible ASCII cannot be represented as a metadata string
/// and are left out.
pub(crate) fn request_metadata(headers: &HeaderMap) -> Metadata {
    // The machine trusts the identity authenticated at `Call`: a bearer token inside the
    // channel is unneeded, so it is not sent where nothing checks it.
    let mut metadata = headers_to_metadata(headers, |name| {
        is_transport_header(name) || name == AUTHORIZATION_HEADER
    });
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    metadata
}

/// The deadline a `grpc-timeout` header gives (`<up to 8 digits><H|M|S|m|u|n>`); `None` for a
/// missing or malformed one, which gRPC treats as no deadline.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?)
}

/// The status a request body that cannot be carried fails its call with.
pub(crate) fn split_status(e: &SplitError) -> tonic::Status {
    match e {
        SplitError::Compressed => {
            tonic::Status::internal("compressed messages cannot be sent over WebRTC")
        }
        SplitError::TooLarge(n) => tonic::Status::resource_exhausted(format!(
            "request message of {n} bytes is larger than the limit of {} bytes",
            tether_rpc::framing::MAX_MESSAGE_BYTES
        )),
        SplitError::Truncated => tonic::Status::internal("request body ended inside a message"),
    }
}

#[cfg(test)]
#[test]
fn split_errors_map_to_statuses() {
    assert_eq!(
        split_status(&SplitError::TooLarge(5)).code(),
        tonic::Code::ResourceExhausted
    );
}

/// Metadata as HTTP headers (tether-rpc's one mapping). An entry that cannot be a header is
/// dropped: the machine's answer still reaches the application.
pub(crate) fn metadata_headers(metadata: &Metadata) -> HeaderMap {
    metadata_to_headers(metadata, |_| false, OnInvalid::Skip).unwrap_or_default()
}

/// The HTTP trailers (or trailers-only headers) for a call that ended with `code`: the
/// metadata, then `grpc-status` and the percent-encoded `grpc-message` (metadata cannot
/// override those).
pub(crate) fn status_headers(code: i32, message: &str, metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let status = tonic::Status::with_metadata(
        tonic::Code::from(code),
        message,
        tonic::metadata::MetadataMap::from_headers(metadata_headers(metadata)),
    );
    if status.add_header(&mut headers).is_err() {
        // Only a message that cannot be a header value even percent-encoded; keep the code.
        headers = HeaderMap::new();
        let _ = tonic::Status::new(status.code(), "").add_header(&mut headers);
    }
    headers
}

/// Trailers for a call that failed on this side with `status`.
pub(crate) fn local_status_headers(status: &tonic::Status) -> HeaderMap {
    status_headers(status.code() as i32, status.message(), &Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("", None),
            ("S", None),
            ("10", None),
            ("1x", None),
            ("-1S", None),
            ("123456789S", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_grpc_timeout(text), want, "{text:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(5)));
    }

    #[test]
    fn request_metadata_keeps_call_headers_and_drops_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("viam-sid", HeaderValue::from_static("abc"));
        h.append("multi", HeaderValue::from_static("1"));
        h.append("multi", HeaderValue::from_static("2"));
        h.insert("trace-bin", HeaderValue::from_static("AAEC"));
        h.insert("odd", HeaderValue::from_bytes(&[0xff, 0x41]).unwrap());
        let md = request_metadata(&h);
        assert_eq!(
            md,
            vec![
                ("content-type".into(), vec!["application/grpc".into()]),
                ("multi".into(), vec!["1".into(), "2".into()]),
                ("trace-bin".into(), vec!["AAEC".into()]),
                ("viam-sid".into(), vec!["abc".into()]),
            ]
        );
    }

    #[test]
    fn trailers_carry_status_percent_encoded_message_and_metadata() {
        let md: Metadata = vec![
            ("Opid".into(), vec!["a".into(), "b".into()]),
            ("grpc-status".into(), vec!["0".into()]),
            ("raw-bin".into(), vec!["\u{1}\u{2}".into()]),
            ("bad key".into(), vec!["x".into()]),
            ("text".into(), vec!["line\nbreak".into()]),
        ];
        let t = status_headers(5, "no resource \"x\" — 100%", &md);
        assert_eq!(t["grpc-status"], "5");
        let message = t["grpc-message"].to_str().unwrap();
        assert!(
            !message.contains(' ') && message.contains("%22"),
            "{message}"
        );
        let status = tonic::Status::from_header_map(&t).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no resource \"x\" — 100%");
        let opids: Vec<_> = t.get_all("opid").iter().collect();
        assert_eq!(opids, ["a", "b"]);
        assert_eq!(t["raw-bin"], "AQI");
        assert!(t.get("text").is_none());
        assert_eq!(t.get_all("grpc-status").iter().count(), 1);
        let ok = status_headers(0, "", &Vec::new());
        assert_eq!(ok["grpc-status"], "0");
        assert!(ok.get("grpc-message").is_none());
        let unknown_code = status_headers(99, "odd", &Vec::new());
        assert_eq!(
            tonic::Status::from_header_map(&unknown_code)
                .unwrap()
                .code(),
            tonic::Code::Unknown
        );
    }
}
