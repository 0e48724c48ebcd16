//! Call metadata between the data channel and HTTP headers, both ways, with any keys and
//! values a peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_rpc::metadata::{OnInvalid, headers_to_metadata, metadata_to_headers};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let metadata: Vec<(String, Vec<String>)> = text
        .split('\n')
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            (k.to_string(), v.split(',').map(str::to_string).collect())
        })
        .collect();
    for on_invalid in [OnInvalid::Fail, OnInvalid::Skip] {
        if let Ok(headers) = metadata_to_headers(&metadata, |k| k == "te", on_invalid) {
            let _ = headers_to_metadata(&headers, |_| false);
        }
    }
});
