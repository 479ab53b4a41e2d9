//! The throwaway PostgreSQL server: it starts, serves a new database, and leaves nothing behind.

use std::net::TcpStream;

use testbed::postgres::Postgres;

#[test]
fn a_test_server_serves_a_new_database_and_is_gone_after_drop() {
    let server = Postgres::start().expect("start a test PostgreSQL server");
    let url = server.create_database("ringlink_test").expect("create a database");
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/ringlink_test", server.port())
    );
    server
        .psql(
            "ringlink_test",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)",
        )
        .expect("create and fill a table");
    let sum = server.psql("ringlink_test", "SELECT sum(x) FROM t").expect("query");
    assert_eq!(sum.trim(), "42");
    let error = server
        .psql("ringlink_test", "SELECT * FROM no_such_table")
        .expect_err("a failing statement is an error");
    assert!(error.to_string().contains("no_such_table"), "{error}");

    let (port, dir) = (server.port(), server.dir().to_path_buf());
    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens on {port}"
    );
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[test]
fn a_killed_server_restarts_on_its_data() {
    let mut server = Postgres::start().expect("start");
    server.create_database("kept").expect("create");
    server
        .psql("kept", "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .expect("fill");
    server.kill();
    assert!(server.psql("kept", "SELECT 1").is_err(), "a killed server answered");
    server.restart(&Default::default()).expect("restart");
    assert_eq!(server.psql("kept", "SELECT x FROM t").expect("query").trim(), "7");
}
