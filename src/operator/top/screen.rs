//! `top`'s full-screen view, drawn with ratatui on its crossterm backend.
//!
//! Crossterm speaks plain escape sequences to whatever terminal the operator's SSH
//! session has, and needs no mouse or extended keyboard protocol, so it works
//! wherever htop does. A terminal left in raw mode on the alternate screen is
//! unusable until `reset`, so every way out restores it: the normal quit, an error
//! (the [`Screen`] guard's drop), a panic in a dependency (a hook), and SIGTERM,
//! SIGHUP or SIGINT from outside, which are blocked and read from a signalfd
//! between frames rather than left to kill the process mid-screen. A dropped SSH
//! connection must end the process too, not leave it spinning on a dead terminal:
//! hence the keys' own thread (see [`keys`]).

use std::io::{stdout, Stdout};
use std::panic;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Alignment, Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::table::{self, Column, Sort, View, LEFT};
use super::{shown_now, Sample, COMMAND};
use crate::operator::Source;
use crate::NAME;

/// Longest wait for a key before looking at the signals again.
const SLICE: Duration = Duration::from_millis(100);

/// Whether the screen is set up, for the panic hook: it restores only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Shows `first`, then a new collection every `delay`, until a quit key or a stop
/// signal (whose shell exit code is returned).
pub fn run(source: &Source, first: Sample, delay: Duration) -> Result<ExitCode, String> {
    let signals = StopSignals::block();
    let mut screen = Screen::enter()?;
    let mut app = App::new(first);
    let result = app.run(&mut screen, source, delay, &signals);
    let restored = screen.leave();
    let code = result?;
    restored?;
    Ok(code)
}

/// The terminal in raw mode on the alternate screen, until [`Screen::leave`] or
/// drop.
struct Screen {
    terminal: ratatui::Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> Result<Screen, String> {
        install_panic_hook();
        enable_raw_mode().map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(stdout(), EnterAlternateScreen, cursor::Hide)
            .map_err(|e| format!("cannot switch to the terminal's alternate screen: {e}"))
            .and_then(|()| {
                ratatui::Terminal::new(CrosstermBackend::new(stdout()))
                    .map_err(|e| format!("cannot read the terminal's size: {e}"))
            });
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                let _ = restore();
                Err(e)
            }
        }
    }

    /// Restores, and says whether that worked (the drop after it has nothing left
    /// to do).
    fn leave(self) -> Result<(), String> {
        restore()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Every step is tried, whatever the one before it did.
fn restore() -> Result<(), String> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let raw = disable_raw_mode();
    let screen = execute!(stdout(), LeaveAlternateScreen, cursor::Show);
    raw.and(screen)
        .map_err(|e| format!("cannot restore the terminal (`reset` will): {e}"))
}

fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let _ = restore();
        previous(info);
    }));
}

/// SIGTERM, SIGHUP and SIGINT, held back and read between frames. Without a
/// signalfd (an old kernel, a seccomp filter) they keep their default action.
struct StopSignals(Option<SignalFd>);

impl StopSignals {
    fn block() -> StopSignals {
        let mut set = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
            set.add(signal);
        }
        // Blocked on the only thread, before the keys' thread starts and inherits the
        // mask: held for the whole process.
        let fd = set
            .thread_block()
            .ok()
            .and_then(|()| SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK).ok());
        StopSignals(fd)
    }

    /// The shell's exit code for a signal received, if one was.
    fn received(&self) -> Option<u8> {
        let info = self.0.as_ref()?.read_signal().ok()??;
        let signo = u8::try_from(info.ssi_signo).unwrap_or(15);
        Some(128u8.saturating_add(signo))
    }
}

/// The terminal's events, read on a thread of their own: once the terminal hangs
/// up, crossterm's reader loops inside its call without end, and the view must
/// still see the SIGHUP (or its next write fail) and exit, which ends the thread.
fn keys() -> Result<Receiver<std::io::Result<Event>>, String> {
    let (send, keys) = mpsc::channel();
    std::thread::Builder::new()
        .name("top-keys".into())
        .spawn(move || loop {
            let event = event::read();
            let failed = event.is_err();
            if send.send(event).is_err() || failed {
                break;
            }
        })
        .map_err(|e| format!("cannot start reading the keyboard: {e}"))?;
    Ok(keys)
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Quit,
    Sort(Sort),
    Scroll(isize),
    None,
}

/// Rows moved by PgUp and PgDn; Home and End go all the way.
const PAGE: isize = 10;

fn action(key: KeyEvent, sort: Sort) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('R' | 'i' | 'I') => Action::Sort(sort.reversed()),
        KeyCode::Char(c) if !ctrl => {
            Column::of_key(c).map_or(Action::None, |c| Action::Sort(Sort::by(c)))
        }
        KeyCode::Up => Action::Scroll(-1),
        KeyCode::Down => Action::Scroll(1),
        KeyCode::PageUp => Action::Scroll(-PAGE),
        KeyCode::PageDown => Action::Scroll(PAGE),
        KeyCode::Home => Action::Scroll(isize::MIN),
        KeyCode::End => Action::Scroll(isize::MAX),
        _ => Action::None,
    }
}

struct App {
    sort: Sort,
    sample: Sample,
    view: View,
    /// The time of the last refresh, as the title shows it.
    at: String,
    /// Why the last collection failed; the view is the one before.
    error: Option<String>,
    scroll: usize,
}

impl App {
    fn new(first: Sample) -> App {
        let sort = Sort::default();
        App {
            view: first.view(None, sort),
            sample: first,
            sort,
            at: shown_now(),
            error: None,
            scroll: 0,
        }
    }

    fn run(
        &mut self,
        screen: &mut Screen,
        source: &Source,
        delay: Duration,
        signals: &StopSignals,
    ) -> Result<ExitCode, String> {
        let keys = keys()?;
        let mut last = Instant::now();
        loop {
            self.draw(screen, delay)?;
            // Keys until the next collection: each redraws at once.
            loop {
                if let Some(code) = signals.received() {
                    return Ok(ExitCode::from(code));
                }
                let left = delay.saturating_sub(last.elapsed());
                if left.is_zero() {
                    break;
                }
                let event = match keys.recv_timeout(left.min(SLICE)) {
                    Ok(Ok(event)) => event,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(Err(e)) => return Err(format!("cannot read the terminal: {e}")),
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err("the terminal's input ended".into())
                    }
                };
                match event {
                    Event::Key(key) => match action(key, self.sort) {
                        Action::Quit => return Ok(ExitCode::SUCCESS),
                        Action::Sort(sort) => {
                            self.sort = sort;
                            self.view.sort(sort);
                        }
                        Action::Scroll(by) => self.scroll_by(by),
                        Action::None => continue,
                    },
                    Event::Resize(..) => {}
                    _ => continue,
                }
                self.draw(screen, delay)?;
            }
            last = Instant::now();
            self.refresh(source);
        }
    }

    /// A new collection. The title's clock moves even when it fails, so that each
    /// refresh writes to the terminal, and a terminal that hung up without a SIGHUP
    /// ends the view with a write error.
    fn refresh(&mut self, source: &Source) {
        match Sample::take(source) {
            Ok(sample) => {
                self.view = sample.view(Some(&self.sample), self.sort);
                self.sample = sample;
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
        self.at = shown_now();
        self.scroll_by(0);
    }

    fn scroll_by(&mut self, by: isize) {
        let last = self.view.rows.len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(by).min(last);
    }

    fn draw(&self, screen: &mut Screen, delay: Duration) -> Result<(), String> {
        screen
            .terminal
            .draw(|frame| self.render(frame, delay))
            .map(|_| ())
            .map_err(|e| format!("cannot draw on the terminal: {e}"))
    }

    fn render(&self, frame: &mut Frame, delay: Duration) {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut top = vec![Line::from(vec![
            Span::styled(format!("{NAME} {COMMAND}"), bold),
            Span::raw(format!(
                "  {}  {}, refreshed every {}s",
                self.at,
                self.view.span_text(),
                delay.as_secs_f64()
            )),
        ])];
        top.extend(self.view.summary().into_iter().map(|l| summary_line(&l)));
        let error = self.error.as_ref().map(|e| {
            Line::styled(
                format!("cannot read the metrics, showing the last reading: {e}"),
                Style::default().fg(Color::Red),
            )
        });
        let [head, _, body, status, foot] = Layout::vertical([
            Constraint::Length(u16::try_from(top.len()).unwrap_or(u16::MAX)),
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(u16::from(error.is_some())),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(top), head);
        frame.render_widget(self.table(), body);
        if let Some(error) = error {
            frame.render_widget(Paragraph::new(error), status);
        }
        frame.render_widget(Paragraph::new(self.footer()), foot);
    }

    fn table(&self) -> Table<'static> {
        let headers = View::headers(self.sort);
        let cells: Vec<Vec<String>> = self
            .view
            .rows
            .iter()
            .skip(self.scroll)
            .map(|r| View::cells(r).to_vec())
            .collect();
        let mut all = vec![headers.clone()];
        all.extend(cells.iter().cloned());
        let widths = table::widths(&all)
            .into_iter()
            .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
        let marked = self.sort.column.header();
        let header = Row::new(headers.into_iter().enumerate().map(|(i, h)| {
            let style = match i == marked {
                true => Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
                false => Style::default().add_modifier(Modifier::BOLD),
            };
            cell(h, i).style(style)
        }));
        let rows = cells
            .into_iter()
            .map(|cells| Row::new(cells.into_iter().enumerate().map(|(i, c)| cell(c, i))));
        let table = Table::new(rows, widths).header(header).column_spacing(2);
        if self.view.rows.is_empty() {
            return table.footer(Row::new([Cell::from("(no live activity)")]));
        }
        table
    }

    fn footer(&self) -> Line<'static> {
        let key = Style::default().add_modifier(Modifier::REVERSED);
        let mut spans = vec![Span::styled("q", key), Span::raw(" quit ")];
        for column in Column::ALL {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(column.key().to_string(), key));
            spans.push(Span::raw(format!(" {} ", column.name())));
        }
        spans.push(Span::raw(" "));
        spans.push(Span::styled("R", key));
        spans.push(Span::raw(" reverse   "));
        spans.push(Span::styled(
            self.sort.describe(),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        Line::from(spans)
    }
}

/// A node that is down or syncing stands out in red.
fn summary_line(text: &str) -> Line<'static> {
    let alarm = text.contains("node DOWN") || text.contains("SYNCING");
    match alarm {
        true => Line::styled(text.to_owned(), Style::default().fg(Color::Red)),
        false => Line::raw(text.to_owned()),
    }
}

fn cell(text: String, column: usize) -> Cell<'static> {
    let alignment = match column < LEFT {
        true => Alignment::Left,
        false => Alignment::Right,
    };
    Cell::from(Line::from(text).alignment(alignment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_quit_sort_reverse_and_scroll() {
        let sort = Sort::default();
        let none = KeyModifiers::NONE;
        for quit in [
            key(KeyCode::Char('q'), none),
            key(KeyCode::Esc, none),
            key(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert_eq!(action(quit, sort), Action::Quit);
        }
        assert_eq!(
            action(key(KeyCode::Char('c'), none), sort),
            Action::Sort(Sort::by(Column::Calls))
        );
        assert_eq!(
            action(key(KeyCode::Char('u'), none), sort),
            Action::Sort(Sort::by(Column::Units))
        );
        for reverse in ['R', 'i'] {
            let shift = key(KeyCode::Char(reverse), KeyModifiers::SHIFT);
            assert_eq!(action(shift, sort), Action::Sort(sort.reversed()));
        }
        assert_eq!(action(key(KeyCode::Char('x'), none), sort), Action::None);
        assert_eq!(
            action(key(KeyCode::PageDown, none), sort),
            Action::Scroll(PAGE)
        );
    }

    #[test]
    fn the_screen_shows_the_table_the_summary_and_the_keys() {
        use crate::metrics::{ActivityFile, Aggregate};
        use crate::owner::Owner;
        let started = super::super::unix_now() - 30;
        let mut a = ActivityFile::new("dev-a", "dev", "act", Owner::current().unwrap(), started);
        a.reading.billed_calls = 10;
        let aggregate = Aggregate {
            networks: ["dev".to_string()].into(),
            activities: vec![a],
            ..Aggregate::default()
        };
        let mut app = App::new(Sample {
            aggregate,
            at: Instant::now(),
        });
        app.sort = Sort::by(Column::Units).reversed();
        app.error = Some("disk gone".into());
        let mut terminal = ratatui::Terminal::new(TestBackend::new(150, 12)).unwrap();
        terminal
            .draw(|f| app.render(f, Duration::from_secs(1)))
            .unwrap();
        let text: Vec<String> = terminal
            .backend()
            .buffer()
            .content()
            .chunks(150)
            .map(|line| {
                line.iter()
                    .map(|c| c.symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect();
        let screen = text.join("\n");
        assert!(text[0].starts_with("ya-runtime-erigon top  "), "{screen}");
        assert!(text[1].starts_with("provider: 1 live"), "{screen}");
        assert!(
            text[2].starts_with("dev  node not probed yet; 1 live"),
            "{screen}"
        );
        assert!(
            text[4].starts_with("NETWORK  USER   UPTIME  CALLS/S  [CU/S]"),
            "{screen}"
        );
        assert!(text[5].starts_with("dev      dev-a"), "{screen}");
        assert!(screen.contains("cannot read the metrics, showing the last reading: disk gone"));
        assert!(
            text[11].starts_with("q quit  c calls/s  u CU/s"),
            "{screen}"
        );
        assert!(
            text[11].ends_with("R reverse   sorted by CU/s, lowest first"),
            "{screen}"
        );
    }
}
