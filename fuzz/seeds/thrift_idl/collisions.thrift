// Type, field and argument names that collide with rpc-core items, std prelude items and the
// generator's own locals and generic parameters. Generated code must spell every path out, so
// this compiles (tests/golden.rs, tests/lints.rs).
namespace rs collisions

enum Option { NONE, SOME }

struct Status { 1: i32 code, 2: string message }
struct Client { 1: string inner }
struct Server { 1: string inner }
struct Result { 1: bool ok }
struct Box { 1: binary contents }
struct String { 1: string value }
struct Vec { 1: list<String> items }
struct Response { 1: Status status, 2: optional Option option }
struct Request { 1: Client client, 2: Server server }
struct WithMetadata { 1: map<string, string> entries }
struct Metadata { 1: i64 n }
struct Arc { 1: i64 n }
struct Future { 1: i64 n }
struct Send { 1: i64 n }
struct Sync { 1: i64 n }
struct Default { 1: i64 n }
struct Some { 1: i64 n }
struct None { 1: i64 n }
struct Ok { 1: i64 n }
struct Err { 1: i64 n }
struct T { 1: Box b }
struct B { 1: T t }
struct Usize { 1: i64 n }

/// Fields named like the generator's locals.
struct Locals {
    1: i32 v,
    2: i32 n,
    3: i32 dst,
    4: i32 o,
    5: i32 i,
    6: i32 e0,
    7: map<i32, list<i32>> k0,
    8: i32 field,
    9: i32 value,
    10: i32 self,
}

union Either { 1: Result result, 2: Option option, 3: String string }

exception Error { 1: Status status }

service Service {
    Response Call(1: Request request, 2: Status status, 3: Option option) throws (1: Error err),
    Result Check(1: T ctx, 2: B options),
    void Fire(1: Box stream),
    T Stream(1: T t) (streaming.mode = "bidirectional"),
    B Collect(1: T t) (streaming.mode = "client"),
    T Spread(1: B b) (streaming.mode = "server"),
    Either Pick(1: Either e) (streaming.mode = "unary"),
}
