//! The page's entry point. Trunk builds this binary for wasm32 (see www/index.html); its `main`
//! runs when the module loads and hands over to `segclip::web`.

#[cfg(target_arch = "wasm32")]
fn main() {
    segclip::web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("segclip-web is the browser entry point: run `scripts/demo` to build and serve the page");
    std::process::exit(2);
}
