//! The basics: both flavors answer, streaming and not.
mod common;

use common::*;
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};

#[tokio::test]
async fn openai_and_anthropic_answer() {
    let oa = Sim::builder(Flavor::OpenAi).seed(7).start().await.unwrap();
    let an = Sim::builder(Flavor::Anthropic)
        .seed(7)
        .start()
        .await
        .unwrap();
    let c = client();
    let r = post(&c, &oa.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 5
    );
    let r = post(&c, &an.completion_url(), &anthropic_messages(true)).await;
    assert_eq!(r.status, 200);
    let ev = r.events();
    assert_eq!(ev[0].0.as_deref(), Some("message_start"));
    assert_eq!(ev.last().unwrap().0.as_deref(), Some("message_stop"));
    oa.set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let r = post(&c, &oa.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 503);
    assert_eq!(oa.counters().status(503), 1);
    assert_eq!(oa.counters().total(), 2);
}
