// Every thrift feature the generator supports, compiled by the golden and wire tests.
include "inc/base.thrift"

namespace go sink
namespace rs kitchen.sink

typedef i64 Id
typedef list<base.Meta> Metas

const string GREETING = "hello \"world\""
const binary MAGIC = "rpc"
const list<i32> PRIMES = [2, 3, 5; 7]
const map<string, base.Level> LEVELS = {"low": base.Level.LOW, "high": base.Level.HIGH}
const set<string> TAGS = ["a", "b"]
const double RATIO = 2.5e-1
const Id ROOT = 1
const base.Level DEFAULT_LEVEL = base.Level.MID
const i32 LIMIT = base.DEFAULT_LIMIT
const bool ENABLED = true

enum Color {
    RED,
    GREEN,
    BLUE,
}

/// A tree node; `next` makes it recursive.
struct Node {
    1: required Id id,
    2: optional Node next,
    3: list<Node> children,
    4: Color color = Color.GREEN,
    5: i32 weight = 7,
    6: optional string label = "none",
}

union Value {
    1: i64 int_value,
    2: string string_value,
    3: list<Value> list_value,
    4: Node node,
}

struct Everything {
    1: bool b,
    2: byte by,
    3: i8 small,
    4: i16 medium,
    5: i32 large,
    6: i64 huge,
    7: double d,
    8: string s,
    9: binary bin,
    10: list<string> strings,
    11: set<i64> ids,
    12: map<string, list<map<i32, set<string>>>> nested,
    13: optional base.Meta meta,
    14: Metas metas,
    15: optional Value value,
    16: map<Color, Node> by_color,
    17: required string type (go.tag = 'json:"type"'),
    18: optional list<binary> blobs,
    19: optional map<i16, Color> codes,
    20: list<bool> flags,
    21: set<Id> typed_ids,
    22: optional map<Id, double> weights,
}

exception Oops {
    1: string message,
    2: i32 code = 500,
}

service Child extends base.BaseService {
    Everything Get(1: Id id, 2: optional base.Meta meta, 3: Color color)
        throws (1: Oops oops, 2: base.NotFound not_found),
    void Fire(1: string what),
    Node Walk(1: Node start) (streaming.mode = "server"),
    Node Collect(1: Node item) (streaming.mode = "client"),
    Value Chat(1: Value v) (streaming.mode = "bidirectional"),
    Node Single(1: Node n) (streaming.mode = "unary", other.annotation = "kept"),
}

// A service without methods still gets its (empty) trait, server and client.
service Empty {}
