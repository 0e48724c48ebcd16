//! gRPC's length prefix, three ways a body reaches it: the one parser, the message limit
//! watching a body chunk by chunk, and the splitter turning a body into messages.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether_rpc::grpc::{LengthLimit, MessageSplitter, Prefix};

fuzz_target!(|data: &[u8]| {
    let _ = Prefix::parse(data);
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut limit = LengthLimit::new(1 << 20);
    let _ = limit.feed(&data[..cut]).and_then(|()| limit.feed(&data[cut..]));
    let mut splitter = MessageSplitter::new(1 << 20);
    for chunk in data.chunks(cut.max(1)) {
        splitter.push(Bytes::copy_from_slice(chunk));
        while let Ok(Some(message)) = splitter.next_message() {
            assert!(message.len() <= 1 << 20);
        }
    }
    let _ = splitter.finish();
});
