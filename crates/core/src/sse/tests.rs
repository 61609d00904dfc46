use super::*;

/// An event with its fields copied out: (type, data, id, retry).
type Owned = (String, String, Option<String>, Option<u64>);

fn own(ev: SseEvent<'_>) -> Owned {
    (
        ev.event_type().to_owned(),
        ev.data_str().into_owned(),
        ev.id.map(str::to_owned),
        ev.retry,
    )
}

/// Feeds `chunks` to a default parser; the events it dispatched (not `finish`).
fn parse_all(chunks: &[&[u8]]) -> Vec<Owned> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut |ev| {
            out.push(own(ev));
            Ok::<_, SseError>(())
        })
        .unwrap();
    }
    out
}

fn datas(ev: &[Owned]) -> Vec<&str> {
    ev.iter().map(|e| e.1.as_str()).collect()
}

#[test]
fn line_endings_of_every_kind() {
    let ev = parse_all(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\r\n"]);
    assert_eq!(datas(&ev), ["a", "b", "c", "d"]);
}

#[test]
fn every_split_point_gives_the_same_events() {
    let whole: &[u8] = b"event: ping\ndata: {}\n\n: comment\ndata: a\ndata: b\n\ndata: [DONE]\n\n";
    let want = parse_all(&[whole]);
    assert_eq!(datas(&want), ["{}", "a\nb", "[DONE]"]);
    assert_eq!(want[0].0, "ping");
    let crlf = String::from_utf8(whole.to_vec())
        .unwrap()
        .replace('\n', "\r\n");
    for src in [whole.to_vec(), crlf.into_bytes()] {
        for i in 0..src.len() {
            let (a, b) = src.split_at(i);
            assert_eq!(parse_all(&[a, b]), want, "split at {i}");
        }
        let bytes: Vec<&[u8]> = src.chunks(1).collect();
        assert_eq!(parse_all(&bytes), want);
    }
}

#[test]
fn crlf_split_across_chunks_is_one_terminator() {
    let ev = parse_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"\r"]);
    assert_eq!(datas(&ev), ["a", "b"]);
}

#[test]
fn an_empty_chunk_between_cr_and_lf_changes_nothing() {
    let ev = parse_all(&[b"data: a\r", b"", b"\ndata: b\n\n"]);
    assert_eq!(datas(&ev), ["a\nb"]);
}

#[test]
fn cr_at_chunk_end_then_other_byte() {
    let ev = parse_all(&[b"data: a\r", b"\rdata: b\n", b"\n"]);
    assert_eq!(datas(&ev), ["a", "b"]);
}

#[test]
fn multi_line_data_and_fields() {
    let ev = parse_all(&[b"event: delta\nid: 7\nretry: 1500\ndata: one\ndata:two\ndata\n\n"]);
    assert_eq!(
        ev,
        [(
            "delta".to_owned(),
            "one\ntwo\n".to_owned(),
            Some("7".to_owned()),
            Some(1500)
        )]
    );
}

#[test]
fn comments_and_dataless_blocks_dispatch_nothing() {
    let ev = parse_all(&[b": keep-alive\n\nevent: ping\n\nid: 3\n\ndata: x\n\n"]);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].0, "message",
        "the dataless block's type does not leak"
    );
    assert_eq!(ev[0].2.as_deref(), Some("3"), "the id persists");
}

#[test]
fn only_one_leading_space_is_stripped() {
    let ev = parse_all(&[b"data:  two\n\n"]);
    assert_eq!(ev[0].1, " two");
}

#[test]
fn bom_is_skipped_once_even_when_split() {
    let ev = parse_all(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
    assert_eq!(datas(&ev), ["a"]);
    // A second BOM is part of the field name, so the line is ignored.
    let ev = parse_all(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"]);
    assert_eq!(datas(&ev), ["b"]);
}

#[test]
fn a_false_bom_start_is_kept() {
    // 0xEF followed by something else: the bytes belong to the line.
    let ev = parse_all(&[b"\xEF", b"data: a\n\ndata: b\n\n"]);
    assert_eq!(datas(&ev), ["b"]);
}

#[test]
fn an_unterminated_event_waits_and_finish_dispatches_it() {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    let mut f = |ev: SseEvent<'_>| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    };
    p.feed(b"data: a\n\ndata: partial\ndata: last", &mut f)
        .unwrap();
    assert!(p.has_partial());
    p.finish(&mut f).unwrap();
    assert!(!p.has_partial());
    assert_eq!(datas(&out), ["a", "partial\nlast"]);
    // A lone field name completes an (empty) event too.
    let mut p = SseParser::new();
    let mut n = 0;
    let mut f = |ev: SseEvent<'_>| {
        assert_eq!(ev.data, b"");
        n += 1;
        Ok::<_, SseError>(())
    };
    p.feed(b"data", &mut f).unwrap();
    p.finish(&mut f).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn invalid_utf8_is_replaced() {
    let ev = parse_all(&[b"event: \xFFx\ndata: \xFF\xFEok\n\n"]);
    assert_eq!(ev[0].0, "\u{FFFD}x");
    assert_eq!(ev[0].1, "\u{FFFD}\u{FFFD}ok");
}

#[test]
fn a_whole_single_line_event_is_borrowed_from_the_chunk() {
    let chunk: &[u8] = b"data: {\"a\":1}\n\ndata: x\ndata: y\n\n";
    let range = chunk.as_ptr_range();
    let mut p = SseParser::new();
    let mut borrowed = Vec::new();
    p.feed(chunk, &mut |ev| {
        borrowed.push(range.contains(&ev.data.as_ptr()));
        Ok::<_, SseError>(())
    })
    .unwrap();
    assert_eq!(
        borrowed,
        [true, false],
        "one data line borrowed, two joined"
    );
    // An event that outlives its chunk is copied before the chunk goes.
    let mut out = Vec::new();
    let first = b"data: kept across\n".to_vec();
    p.feed(&first, &mut |ev| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    })
    .unwrap();
    drop(first);
    p.feed(b"\n", &mut |ev| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    })
    .unwrap();
    assert_eq!(datas(&out), ["kept across"]);
}

#[test]
fn long_lines_are_refused_and_the_parser_stays_failed() {
    let mut p = SseParser::with_limits(SseLimits {
        max_line: 16,
        max_event: 64,
    });
    let mut out = Vec::new();
    let mut f = |ev: SseEvent<'_>| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    };
    p.feed(b"data: 0123456789", &mut f).unwrap();
    let err = p.feed(b"abcdef", &mut f).unwrap_err();
    assert_eq!(err, SseError::LineTooLong { limit: 16 });
    assert_eq!(p.feed(b"\n\n", &mut f), Err(err));
    assert_eq!(p.finish(&mut f), Err(err));
    assert!(out.is_empty());
}

#[test]
fn a_long_line_is_refused_whole_as_in_pieces() {
    let line = format!(": {}\n\ndata: x\n\n", "c".repeat(100));
    let mut p = SseParser::with_limits(SseLimits::both(32));
    let mut f = |_: SseEvent<'_>| Ok::<_, SseError>(());
    assert_eq!(
        p.feed(line.as_bytes(), &mut f),
        Err(SseError::LineTooLong { limit: 32 })
    );
}

#[test]
fn big_events_are_refused() {
    let mut p = SseParser::with_limits(SseLimits {
        max_line: 16,
        max_event: 20,
    });
    let mut f = |_: SseEvent<'_>| Ok::<_, SseError>(());
    let err = p
        .feed(b"data: 0123456789\ndata: 0123456789\n\n", &mut f)
        .unwrap_err();
    assert_eq!(err, SseError::EventTooLarge { limit: 20 });
    assert!(err.to_string().contains("20 bytes"));
    let invalid = Invalid::from(err);
    assert_eq!(invalid.kind(), RejectKind::Shape);
}

#[test]
fn an_error_from_the_callback_stops_the_chunk() {
    let mut p = SseParser::new();
    let mut seen = 0;
    let res = p.feed(b"data: a\n\ndata: b\n\n", &mut |_| {
        seen += 1;
        Err(Invalid::new(RejectKind::Shape, "no"))
    });
    assert!(res.is_err());
    assert_eq!(seen, 1);
}

#[test]
fn retry_must_be_digits() {
    let ev = parse_all(&[b"retry: 12a\ndata: x\n\nretry: 99999999999999999999999\ndata: y\n\n"]);
    assert_eq!(ev[0].3, None);
    assert_eq!(ev[1].3, Some(u64::MAX));
}

#[test]
fn data_is_borrowed_when_valid_and_repaired_when_not() {
    let valid = SseEvent {
        data: "{\"é\":1}".as_bytes(),
        ..SseEvent::default()
    };
    assert!(matches!(valid.data_str(), Cow::Borrowed("{\"é\":1}")));
    let broken = SseEvent {
        data: b"a\xffb",
        ..SseEvent::default()
    };
    assert_eq!(broken.data_str(), "a\u{fffd}b");
}
