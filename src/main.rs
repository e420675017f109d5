/// glibc malloc showed up as a fifth of the gateway's CPU under load (every
/// request allocates headers, bodies and JSON); mimalloc's thread-local free
/// lists make those allocations cheap.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    codex_proxy::cli::main()
}
