//! The shared GCRA buckets and key health in real PostgreSQL: concurrent
//! reservations never exceed the budget, cooldowns hold and never shorten,
//! disabled keys are skipped, configured limits win over learned ones.

use genq::store::buckets::{self, BucketSpec};
use genq::store::keys::{self, KeyRow};
use genq_testkit::TestDb;
use std::time::Duration;

/// One slot per round trip, as a lone caller asks.
const NO_HORIZON: std::time::Duration = std::time::Duration::ZERO;

async fn setup(db: &TestDb, keys_and_rates: &[(&str, f64, u32)]) {
    let rows: Vec<KeyRow> = keys_and_rates
        .iter()
        .map(|(id, _, _)| KeyRow { id, account: None })
        .collect();
    keys::register(&db.pool, &rows).await.unwrap();
    let specs: Vec<BucketSpec> = keys_and_rates
        .iter()
        .map(|(id, rpm, burst)| BucketSpec {
            id: format!("{id}/m"),
            scope: id.to_string(),
            model: "m".into(),
            requests_per_minute: *rpm,
            images_per_minute: None,
            burst: *burst,
            requests_per_day: None,
            images_per_day: None,
            day_secs: 86_400.0,
            configured: true,
        })
        .collect();
    buckets::ensure_buckets(&db.pool, &specs).await.unwrap();
}

#[tokio::test]
async fn twenty_concurrent_callers_get_exactly_the_burst() {
    let db = TestDb::new().await;
    // 3 a minute (one every 20 s), burst 3: however long the 20 callers take
    // to arrive (short of 20 s), exactly 3 get a slot.
    setup(&db, &[("a", 3.0, 3)]).await;
    let interval = Duration::from_secs(20);
    // A connection each, opened beforehand, and a barrier: all 20 ask at once
    // rather than as fast as connections happen to open.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(db.pool.acquire().await.unwrap());
    }
    drop(warm);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let start = std::time::Instant::now();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let pool = db.pool.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                buckets::reserve(&pool, &[("a", "a/m")], 1, 1, NO_HORIZON, &[], &[])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    let mut earliest = Vec::new();
    for c in callers {
        let r = c.await.unwrap();
        match r.key_id {
            Some(_) => granted += 1,
            None => earliest.push(r.earliest.unwrap()),
        }
    }
    let took = start.elapsed();
    assert!(took < interval, "the callers took {took:?}: not concurrent");
    assert_eq!(granted, 3);
    // The refusals say honestly when the next slot opens: one interval after
    // the first grant, by the database's clock, measured from the refusing
    // statement's `now()`. That statement may have begun before the first
    // grant and then waited for the bucket's row lock, so its wait lies
    // within the callers' spread of 20 s either way.
    assert_eq!(earliest.len(), 17);
    for wait in earliest {
        assert!(
            wait <= interval + took && wait + took >= interval,
            "{wait:?} (callers took {took:?})"
        );
    }
}

#[tokio::test]
async fn one_round_trip_grants_a_fast_key_many_slots_each_at_its_moment() {
    let db = TestDb::new().await;
    // 6,000/min: one every 10 ms. Asked for 20 within 50 ms: 6 (now, +10 … +50 ms).
    setup(&db, &[("fast", 6000.0, 1), ("slow", 60.0, 2)]).await;
    let horizon = std::time::Duration::from_millis(50);
    let first_sent = std::time::Instant::now();
    let r = buckets::reserve(&db.pool, &[("fast", "fast/m")], 1, 20, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(r.key_id.as_deref(), Some("fast"));
    assert_eq!(r.slots.len(), 6, "{:?}", r.slots);
    for pair in r.slots.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap.abs_diff(Duration::from_millis(10)) < Duration::from_micros(100),
            "{gap:?}"
        );
    }
    assert_eq!(r.slots[0], Duration::ZERO, "the first slot is now");
    assert_eq!(r.interval, Some(Duration::from_millis(10)));
    // The bucket is spent until the last slot's moment has passed. The
    // second call's wait counts from its own now(), later than the first's
    // by at most the time between the two calls.
    let next = buckets::reserve(&db.pool, &[("fast", "fast/m")], 1, 20, horizon, &[], &[])
        .await
        .unwrap();
    let between = first_sent.elapsed();
    assert_eq!(next.key_id, None);
    assert!(
        next.earliest.unwrap() + between + Duration::from_millis(5) >= *r.slots.last().unwrap(),
        "{:?} + {between:?} < {:?}",
        next.earliest,
        r.slots.last()
    );

    // A slow key grants its burst and no more, however many are asked for.
    let r = buckets::reserve(&db.pool, &[("slow", "slow/m")], 1, 20, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(r.slots.len(), 2);
    let r = buckets::reserve(&db.pool, &[("slow", "slow/m")], 1, 20, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!((r.key_id, r.slots.len()), (None, 0));
}

#[tokio::test]
async fn the_key_with_most_room_is_chosen_and_disabled_keys_are_skipped() {
    let db = TestDb::new().await;
    setup(&db, &[("a", 60.0, 1), ("b", 60.0, 1)]).await;
    let cands = [("a", "a/m"), ("b", "b/m")];
    let first = buckets::reserve(&db.pool, &cands, 1, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap()
        .key_id
        .unwrap();
    let second = buckets::reserve(&db.pool, &cands, 1, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap()
        .key_id
        .unwrap();
    assert_ne!(
        first, second,
        "both keys should be used before either waits"
    );
    let none = buckets::reserve(&db.pool, &cands, 1, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap();
    assert_eq!(none.key_id, None);
    assert!(none.earliest.unwrap() > Duration::from_millis(900));

    keys::disable(&db.pool, "a", "401 invalid_api_key")
        .await
        .unwrap();
    keys::disable(&db.pool, "b", "429 insufficient_quota")
        .await
        .unwrap();
    let all_disabled = buckets::reserve(&db.pool, &cands, 1, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap();
    assert_eq!(
        all_disabled,
        buckets::Reservation {
            key_id: None,
            slots: vec![],
            interval: None,
            earliest: None,
            missing: 0
        }
    );
    assert!(keys::enable(&db.pool, "a").await.unwrap());
    let listed = keys::list(&db.pool).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.state.as_str()).collect::<Vec<_>>(),
        ["active", "disabled"]
    );
    assert_eq!(
        listed[1].disabled_reason.as_deref(),
        Some("429 insufficient_quota")
    );
}

#[tokio::test]
async fn a_cooldown_blocks_the_key_and_a_shorter_one_never_shortens_it() {
    let db = TestDb::new().await;
    setup(&db, &[("a", 6000.0, 5)]).await;
    let first = keys::cool_down(
        &db.pool,
        "a",
        "a/m",
        Duration::from_secs(30),
        "429 rate_limit_exceeded",
        None,
    )
    .await
    .unwrap();
    assert!(first > Duration::from_millis(29_900) && first <= Duration::from_secs(30));
    let later = keys::cool_down(&db.pool, "a", "a/m", Duration::from_secs(2), "again", None)
        .await
        .unwrap();
    assert!(
        later > Duration::from_millis(29_000),
        "the later deadline is kept: {later:?}"
    );
    let r = buckets::reserve(&db.pool, &[("a", "a/m")], 1, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap();
    assert_eq!(r.key_id, None);
    assert!(r.earliest.unwrap().abs_diff(later) < Duration::from_millis(500));
    let status = &keys::list(&db.pool).await.unwrap()[0];
    assert_eq!(status.state, genq::keys::KeyState::Cooling);
    assert!(status.cooldown_remaining_secs.unwrap() > 25.0);
}

#[tokio::test]
async fn images_are_counted_by_n() {
    let db = TestDb::new().await;
    keys::register(
        &db.pool,
        &[KeyRow {
            id: "a",
            account: None,
        }],
    )
    .await
    .unwrap();
    let spec = BucketSpec {
        id: "a/m".into(),
        scope: "a".into(),
        model: "m".into(),
        requests_per_minute: 6000.0,
        images_per_minute: Some(60.0),
        burst: 4,
        requests_per_day: None,
        images_per_day: None,
        day_secs: 86_400.0,
        configured: true,
    };
    buckets::ensure_buckets(&db.pool, &[spec]).await.unwrap();
    assert!(
        buckets::reserve(&db.pool, &[("a", "a/m")], 3, 1, NO_HORIZON, &[], &[])
            .await
            .unwrap()
            .key_id
            .is_some()
    );
    // 3 of 4 images used: one more fits, two do not.
    let refused = buckets::reserve(&db.pool, &[("a", "a/m")], 2, 1, NO_HORIZON, &[], &[])
        .await
        .unwrap();
    assert!(refused.key_id.is_none());
    assert!(
        buckets::reserve(&db.pool, &[("a", "a/m")], 1, 1, NO_HORIZON, &[], &[])
            .await
            .unwrap()
            .key_id
            .is_some()
    );
}

#[tokio::test]
async fn configured_limits_override_and_learned_ones_survive_a_restart() {
    let db = TestDb::new().await;
    keys::register(
        &db.pool,
        &[KeyRow {
            id: "a",
            account: None,
        }],
    )
    .await
    .unwrap();
    let adaptive = BucketSpec {
        id: "a/m".into(),
        scope: "a".into(),
        model: "m".into(),
        requests_per_minute: 60.0,
        images_per_minute: None,
        burst: 1,
        requests_per_day: None,
        images_per_day: None,
        day_secs: 86_400.0,
        configured: false,
    };
    buckets::ensure_buckets(&db.pool, std::slice::from_ref(&adaptive))
        .await
        .unwrap();
    buckets::set_rate(&db.pool, "a/m", 20.0, "learned")
        .await
        .unwrap();
    buckets::ensure_buckets(&db.pool, std::slice::from_ref(&adaptive))
        .await
        .unwrap(); // a restart
    assert_eq!(
        keys::list(&db.pool).await.unwrap()[0].limits,
        ["m=20.0/min (learned)"]
    );
    buckets::ensure_buckets(
        &db.pool,
        &[BucketSpec {
            requests_per_minute: 90.0,
            requests_per_day: None,
            images_per_day: None,
            day_secs: 86_400.0,
            configured: true,
            ..adaptive
        }],
    )
    .await
    .unwrap();
    buckets::set_rate(&db.pool, "a/m", 5.0, "adaptive")
        .await
        .unwrap(); // ignored: configured
    assert_eq!(
        keys::list(&db.pool).await.unwrap()[0].limits,
        ["m=90.0/min (configured)"]
    );
}

#[tokio::test]
async fn a_daily_cap_grants_its_count_per_window_then_waits_for_the_next() {
    let db = TestDb::new().await;
    setup(&db, &[("a", 6000.0, 5)]).await;
    let spec = BucketSpec {
        id: "a/m".into(),
        scope: "a".into(),
        model: "m".into(),
        requests_per_minute: 6000.0,
        images_per_minute: None,
        burst: 5,
        requests_per_day: Some(3),
        images_per_day: None,
        day_secs: 2.0,
        configured: true,
    };
    buckets::ensure_buckets(&db.pool, &[spec]).await.unwrap();
    let horizon = Duration::from_millis(50);
    let first = buckets::reserve(&db.pool, &[("a", "a/m")], 1, 10, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(
        first.slots.len(),
        3,
        "the day's 3, though 10 were asked and the rate allows 5"
    );
    let spent = buckets::reserve(&db.pool, &[("a", "a/m")], 1, 10, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(spent.key_id, None);
    let wait = spent.earliest.unwrap();
    assert!(
        wait > Duration::from_millis(1800) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    // A slot given back is the day's again.
    buckets::give_back(
        &db.pool,
        &[buckets::Unused {
            bucket_id: "a/m".into(),
            requests: 1,
            images: 1,
        }],
    )
    .await
    .unwrap();
    let again = buckets::reserve(&db.pool, &[("a", "a/m")], 1, 10, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(again.slots.len(), 1);
    tokio::time::sleep(wait).await;
    let next_day = buckets::reserve(&db.pool, &[("a", "a/m")], 1, 10, horizon, &[], &[])
        .await
        .unwrap();
    assert_eq!(next_day.slots.len(), 3, "a new window");
}
