//! Declared publications and collections against a client that tries to read or write what
//! it should not: operators smuggled through arguments, anonymous writes against `$userId`
//! rules, restricted updates, operations without rules, and configurations that must not
//! start.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};

const CONFIG: &str = r#"
[[publications]]
name = "owned.by"
collection = "owned"
selector = { owner = "$args.0" }

[[publications]]
name = "owned.typed"
collection = "owned"
args = ["string"]
selector = { owner = "$args.0" }

[[publications]]
name = "owned.either"
collection = "owned"
args = ["string", "string?"]
selector = { owner = { "$in" = ["$args.0", "$args.1"] } }

[[publications]]
name = "owned.tagged"
collection = "owned"
selector = { tags = { "$elemMatch" = { name = "$args.0" } } }

[[publications]]
name = "owned.nested"
collection = "owned"
selector = { "meta.owner" = "$args.0" }

[[publications]]
name = "owned.mine"
collection = "owned"
selector = { owner = "$userId" }

[[publications]]
name = "owned.mine.strict"
collection = "owned"
selector = { owner = "$userId" }
login_required = true

[[publications]]
name = "owned.matching"
collection = "owned"
args = ["string"]
selector = { owner = { "$regex" = "$args.0" } }

[[publications]]
name = "owned.everything"
collection = "owned"
limit = 0

[[collections]]
name = "owned"
insert = { owner = "$userId" }
update = { owner = "$userId" }

[[collections]]
name = "items"
insert = {}
update = {}
remove = {}

[[collections]]
name = "notes"
insert = {}
"#;

use common::config_file;

async fn server() -> common::TestServer {
    let path = config_file(CONFIG);
    let mut settings = common::test_settings(|c| c.config = Some(path));
    // Some tests here write one collection a dozen times on one connection.
    common::without_limits_by_name(&mut settings);
    common::spawn_server(settings).await
}

/// Subscribes; returns the documents added and the closing `ready` or `nosub`.
async fn subscribe(c: &mut DdpClient, id: &str, name: &str, params: Json) -> (Vec<Json>, Json) {
    c.send(json!({"msg":"sub","id":id,"name":name,"params":params}))
        .await;
    let mut added = Vec::new();
    loop {
        let m = c.recv_data().await;
        match m["msg"].as_str() {
            Some("added") => added.push(m),
            Some("ready" | "nosub") => return (added, m),
            _ => panic!("unexpected {m}"),
        }
    }
}

/// Logs in as `user`; the frames of the subscriptions that re-run for the new user (they
/// come before the result) are passed over.
async fn login(c: &mut DdpClient, user: &str) {
    let seen = c
        .call_seeing("login", "test.setUserId", json!([user]))
        .await;
    let r = seen.last().unwrap();
    assert!(r.get("error").is_none(), "{r}");
}

/// Three documents: two of ann's, one of bob's.
async fn seed(server: &common::TestServer) {
    let (mut c, _) = DdpClient::connect(server).await;
    for (user, id) in [("ann", "a1"), ("ann", "a2"), ("bob", "b1")] {
        login(&mut c, user).await;
        let doc =
            json!({"_id": id, "owner": user, "tags": [{"name": user}], "meta": {"owner": user}});
        let (r, _) = c.call(id, "/owned/insert", json!([doc])).await;
        assert_eq!(r["result"], id, "{r}");
    }
}

/// Subscribes on a connection of its own, so that documents another subscription already
/// sent (which the mergebox does not send twice) do not hide what this one publishes.
async fn subscribe_alone(
    server: &common::TestServer,
    user: Option<&str>,
    name: &str,
    params: Json,
) -> (Vec<Json>, Json) {
    let (mut c, _) = DdpClient::connect(server).await;
    if let Some(user) = user {
        login(&mut c, user).await;
    }
    subscribe(&mut c, "alone", name, params).await
}

fn ids(added: &[Json]) -> Vec<&str> {
    let mut ids: Vec<&str> = added.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn arguments_are_values_never_operators() {
    let server = server().await;
    seed(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let injections = [
        json!({"$ne": "x"}),
        json!({"$regex": "."}),
        json!({"$gt": ""}),
        json!({"$exists": true}),
        json!({"$regexp": ".", "$flags": ""}),
    ];
    for (i, injected) in injections.iter().enumerate() {
        for name in ["owned.by", "owned.tagged", "owned.nested"] {
            let (added, end) =
                subscribe(&mut c, &format!("{name}{i}"), name, json!([injected])).await;
            assert_eq!(end["msg"], "ready", "{name} {injected}: {end}");
            assert!(added.is_empty(), "{name} {injected} leaked {added:?}");
        }
    }
    // The same publications still work with plain values.
    let (added, _) = subscribe_alone(&server, None, "owned.by", json!(["ann"])).await;
    assert_eq!(ids(&added), ["a1", "a2"]);
    let (added, _) = subscribe_alone(&server, None, "owned.tagged", json!(["bob"])).await;
    assert_eq!(ids(&added), ["b1"]);
    let (added, _) = subscribe_alone(&server, None, "owned.nested", json!(["bob"])).await;
    assert_eq!(ids(&added), ["b1"]);
    // No argument at all is no value to compare with: nothing, not everything.
    let (added, end) = subscribe(&mut c, "none", "owned.by", json!([])).await;
    assert_eq!(end["msg"], "ready");
    assert!(added.is_empty(), "{added:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn declared_argument_types_refuse_mismatches_with_match_failed() {
    let server = server().await;
    seed(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    for (i, params) in [
        json!([{"$ne": "x"}]),
        json!([1]),
        json!([]),
        json!([null]),
        json!(["ann", "bob", "carl"]),
    ]
    .iter()
    .enumerate()
    {
        let (added, end) = subscribe(&mut c, &format!("t{i}"), "owned.typed", params.clone()).await;
        assert!(added.is_empty(), "{params}: {added:?}");
        assert_eq!(end["msg"], "nosub", "{params}: {end}");
        assert_eq!(end["error"]["error"], 400, "{end}");
        assert_eq!(end["error"]["reason"], "Match failed", "{end}");
    }
    let (added, end) = subscribe_alone(&server, None, "owned.typed", json!(["bob"])).await;
    assert_eq!((ids(&added), &end["msg"]), (vec!["b1"], &json!("ready")));
    // A trailing options object is still allowed after the declared arguments.
    let (added, _) =
        subscribe_alone(&server, None, "owned.typed", json!(["ann", {"limit": 1}])).await;
    assert_eq!(added.len(), 1);
    // In `$in`: a pattern is refused, an optional argument left out narrows nothing.
    let (_, end) = subscribe(
        &mut c,
        "in-re",
        "owned.either",
        json!(["ann", {"$regexp": ".", "$flags": ""}]),
    )
    .await;
    assert_eq!(end["error"]["reason"], "Match failed", "{end}");
    let (added, _) = subscribe_alone(&server, None, "owned.either", json!(["bob"])).await;
    assert_eq!(ids(&added), ["b1"]);
    let (added, _) = subscribe_alone(&server, None, "owned.either", json!(["bob", "ann"])).await;
    assert_eq!(ids(&added), ["a1", "a2", "b1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn user_id_rules_never_pass_without_a_user() {
    let server = server().await;
    seed(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    for (i, doc) in [
        json!({"x": 1}),
        json!({"owner": null}),
        json!({"owner": {"$exists": false}}),
    ]
    .iter()
    .enumerate()
    {
        let (r, _) = c
            .call(&format!("i{i}"), "/owned/insert", json!([doc]))
            .await;
        assert_eq!(r["error"]["error"], 403, "{doc}: {r}");
        assert_eq!(r["error"]["reason"], "Access denied", "{r}");
    }
    let (r, _) = c
        .call("u", "/owned/update", json!(["a1", {"$set": {"x": 1}}]))
        .await;
    assert_eq!(r["error"]["reason"], "Access denied", "{r}");

    let (added, end) = subscribe(&mut c, "mine", "owned.mine", json!([])).await;
    assert_eq!(end["msg"], "ready", "{end}");
    assert!(added.is_empty(), "{added:?}");
    let (added, end) = subscribe(&mut c, "strict", "owned.mine.strict", json!([])).await;
    assert!(added.is_empty());
    assert_eq!(end["msg"], "nosub", "{end}");
    assert_eq!(end["error"]["error"], 403, "{end}");

    // With a user, the same rules and publications work.
    login(&mut c, "bob").await;
    let (added, _) = subscribe_alone(&server, Some("bob"), "owned.mine", json!([])).await;
    assert_eq!(ids(&added), ["b1"]);
    let (added, end) = subscribe_alone(&server, Some("bob"), "owned.mine.strict", json!([])).await;
    assert_eq!((ids(&added), &end["msg"]), (vec!["b1"], &json!("ready")));
    let (r, _) = c
        .call("u2", "/owned/update", json!(["b1", {"$set": {"x": 1}}]))
        .await;
    assert_eq!(r["result"], 1, "{r}");
    let (r, _) = c
        .call("u3", "/owned/update", json!(["a1", {"$set": {"x": 1}}]))
        .await;
    assert_eq!(
        r["error"]["reason"], "Access denied",
        "another's document: {r}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn restricted_updates_refuse_replacements_and_unlisted_operators() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let (r, _) = c
        .call("i", "/items/insert", json!([{"_id": "u1", "a": 1, "b": 2}]))
        .await;
    assert_eq!(r["result"], "u1");
    let no_replace = "Access denied. In a restricted collection you can only update documents, \
                      not replace them. Use a Mongo update operator, such as '$set'.";
    for (i, modifier) in [
        json!({"a": 2}),
        json!({}),
        json!({"$set": {"a": 3}, "a": 2}),
    ]
    .iter()
    .enumerate()
    {
        let (r, _) = c
            .call(&format!("r{i}"), "/items/update", json!(["u1", modifier]))
            .await;
        assert_eq!(r["error"]["error"], 403, "{modifier}: {r}");
        assert_eq!(r["error"]["reason"], no_replace, "{modifier}");
    }
    for op in [
        "$rename",
        "$setOnInsert",
        "$currentDate",
        "$min",
        "$max",
        "$mul",
    ] {
        let (r, _) = c
            .call(op, "/items/update", json!(["u1", {op: {"a": "c"}}]))
            .await;
        assert_eq!(r["error"]["error"], 403, "{op}: {r}");
        assert_eq!(
            r["error"]["reason"],
            format!("Access denied. Operator {op} not allowed in a restricted collection."),
        );
    }
    let (r, _) = c.call("m", "/items/update", json!(["u1", "text"])).await;
    assert_eq!(r["error"]["reason"], "Match failed", "{r}");
    // Nothing above changed the document; an allowed operator does.
    let (r, _) = c
        .call("ok", "/items/update", json!(["u1", {"$inc": {"a": 1}}]))
        .await;
    assert_eq!(r["result"], 1, "{r}");
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let docs = store
        .find("items", comet::storage::FindOptions::default())
        .await
        .unwrap();
    assert_eq!(
        comet::model::Value::Object(docs[0].clone()).to_ejson_string(),
        r#"{"_id":"u1","a":2,"b":2}"#
    );
    server.shutdown().await;
}

#[tokio::test]
async fn operations_without_a_rule_are_refused_before_any_lookup() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let (r, _) = c
        .call("i", "/notes/insert", json!([{"_id": "n1", "t": "x"}]))
        .await;
    assert_eq!(r["result"], "n1");
    // The same answer whether the id exists or not: nothing leaks.
    for id in ["n1", "nope"] {
        let (r, _) = c.call(id, "/notes/remove", json!([id])).await;
        assert_eq!(r["error"]["error"], 403, "{r}");
        assert_eq!(
            r["error"]["reason"],
            "Access denied. No allow validators set on restricted collection for method 'remove'."
        );
        let (r, _) = c
            .call(id, "/notes/update", json!([id, {"$set": {"t": "y"}}]))
            .await;
        assert_eq!(
            r["error"]["reason"],
            "Access denied. No allow validators set on restricted collection for method 'update'."
        );
    }
    let (r, _) = c.call("s", "/items/remove", json!([{"a": 1}])).await;
    assert_eq!(
        r["error"]["reason"],
        "Not permitted. Untrusted code may only remove documents by ID."
    );
    let (r, _) = c
        .call("s2", "/items/update", json!([{"a": 1}, {"$set": {"a": 2}}]))
        .await;
    assert_eq!(
        r["error"]["reason"],
        "Not permitted. Untrusted code may only update documents by ID."
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_pattern_that_does_not_compile_gets_a_short_stable_error() {
    let server = server().await;
    seed(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let (added, end) = subscribe(&mut c, "re", "owned.matching", json!(["("])).await;
    assert!(added.is_empty());
    assert_eq!(end["error"]["error"], 400, "{end}");
    assert_eq!(
        end["error"]["reason"], "Invalid regular expression",
        "{end}"
    );
    let (added, _) = subscribe(&mut c, "re2", "owned.matching", json!(["^b"])).await;
    assert_eq!(ids(&added), ["b1"]);
    let (r, _) = c
        .call("i", "/items/insert", json!([{"_id": "u1", "tags": ["a"]}]))
        .await;
    assert_eq!(r["result"], "u1");
    let (r, _) = c
        .call(
            "p",
            "/items/update",
            json!(["u1", {"$pull": {"tags": {"$regex": "a{2,1}"}}}]),
        )
        .await;
    assert_eq!(r["error"]["reason"], "Invalid regular expression", "{r}");
    assert!(
        !r.to_string().contains('^'),
        "no caret drawing reaches the client: {r}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn limit_zero_means_no_limit() {
    let server = server().await;
    seed(&server).await;
    let (added, _) = subscribe_alone(&server, None, "owned.everything", json!([])).await;
    assert_eq!(ids(&added), ["a1", "a2", "b1"]);
    let (added, _) =
        subscribe_alone(&server, None, "owned.typed", json!(["ann", {"limit": 0}])).await;
    assert_eq!(
        ids(&added),
        ["a1", "a2"],
        "a client's limit 0 is no limit either"
    );
    server.shutdown().await;
}

fn start_error(config: &str) -> String {
    let path = config_file(config);
    let settings = common::test_settings(|c| c.config = Some(path.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async { comet::app::build(&settings).await.err() });
    let err = err.expect("the configuration is refused").to_string();
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    err
}

#[test]
fn unusable_names_stop_start_up_with_file_line_and_reason() {
    let err = start_error("[[collections]]\nname = \"bad name!\"\ninsert = {}\n");
    assert!(
        err.contains("line 2") && err.contains("invalid collection name"),
        "{err}"
    );
    let err =
        start_error("[[collections]]\nname = \"ok\"\n\n[[collections]]\nname = \"system.users\"\n");
    assert!(
        err.contains("line 5") && err.contains("system.users"),
        "{err}"
    );
    let err = start_error(
        "[[publications]]\nname = \"p\"\ncollection = \"c\"\n\n[[publications]]\nname = \"p\"\ncollection = \"d\"\n",
    );
    assert!(
        err.contains("line 6") && err.contains("declared twice"),
        "{err}"
    );
    let err = start_error("[[collections]]\nname = \"c\"\n\n[[collections]]\nname = \"c\"\n");
    assert!(
        err.contains("line 5") && err.contains("declared twice"),
        "{err}"
    );
    let err = start_error("[[publications]]\nname = \"p\"\ncollection = \"a b\"\n");
    assert!(
        err.contains("line 2") && err.contains("invalid collection name"),
        "{err}"
    );
    let err = start_error(
        "[[publications]]\nname = \"p\"\ncollection = \"c\"\nargs = [\"string\"]\nselector = { a = \"$args.1\" }\n",
    );
    assert!(err.contains("$args.1"), "{err}");
    let err = start_error("[[publications]]\nname = \"p\"\ncollection = \"c\"\nargs = [\"str\"]\n");
    assert!(err.contains("unknown argument type"), "{err}");
    let err = start_error(
        "[[publications]]\nname = \"p\"\ncollection = \"c\"\nselector = { a = { \"$not\" = \"$args.0\" } }\n",
    );
    assert!(err.contains("$not"), "{err}");
    let err = start_error("[[collections]]\nname = \"c\"\ninsert = { a = \"$args.0\" }\n");
    assert!(err.contains("$userId"), "rules name no arguments: {err}");
}
