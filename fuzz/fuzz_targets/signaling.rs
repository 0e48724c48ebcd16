//! Signaling messages as a caller or an answerer sends them, and the SDP inside them as the
//! WebRTC engine would read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tether_proto::proto::rpc::webrtc::v1 as pb;

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = pb::CallRequest::decode(data) {
        let _ = tether_rtc::check_signaled_sdp(&call.sdp, "offer");
    }
    if let Ok(update) = pb::CallUpdateRequest::decode(data) {
        let _ = update.update;
    }
    if let Ok(answer) = pb::AnswerResponse::decode(data)
        && let Some(pb::answer_response::Stage::Init(init)) = answer.stage
    {
        let _ = tether_rtc::check_signaled_sdp(&init.sdp, "answer");
    }
    let text = String::from_utf8_lossy(data);
    let _ = tether_rtc::check_signaled_sdp(&text, "offer");
});
