//! Commands on a server's host (its restart, its hooks), each inside the tracking wrapper
//! and journaled with its marker and remote bound; and asking a host whether one still
//! runs.

use super::*;
use crate::plan::template::command_line;
use crate::plan::{REMOTE_KILL_AFTER, VerifyRead};

impl<E: Effects> Driver<'_, E> {
    /// The outcome of a command: one whose outcome is unknown may still run.
    pub(super) fn command_outcome(
        &self,
        server: &ServerName,
        change: Change,
        result: &Result<(), CommandFailure>,
    ) {
        let _ = self.write(Record::Outcome {
            time: now(),
            server: server.to_string(),
            change,
            ok: result.is_ok(),
            error: result.as_ref().err().map(|error| error.text().to_owned()),
            may_still_run: matches!(result, Err(CommandFailure::Unknown(_))),
        });
    }

    /// Journals a command about to be started for the server at `index` (on `host`, or
    /// here), with the marker that will prove whether it still runs and its remote bound,
    /// and remembers the marker for `Effect::CheckCommand`.
    pub(super) fn command_intent(
        &self,
        index: usize,
        change: Change,
        host: Option<&str>,
        timeout: Duration,
    ) -> Result<Marker, CommandFailure> {
        let server = &self.plan.servers[index].name;
        let marker = Marker::new(&self.rollout_id, server.as_str());
        let until = std::time::SystemTime::now() + self.plan.remote_bound(timeout);
        self.intent_of(
            server,
            change,
            Some(SentCommand {
                host: host.map(str::to_owned),
                marker: marker.as_str().to_owned(),
                until: humantime::format_rfc3339_millis(until).to_string(),
            }),
        )
        .map_err(CommandFailure::Failed)?;
        self.commands.lock().expect("the commands lock").insert(
            index,
            StartedCommand {
                host: host.map(str::to_owned),
                marker: marker.clone(),
            },
        );
        Ok(marker)
    }

    pub(super) async fn restart(
        &self,
        index: usize,
        marker: &Marker,
    ) -> Result<(), CommandFailure> {
        let values = &self.targets[index];
        let restart = &self.plan.restart;
        let command = tracked_command(
            &remote_command(&restart.command, values, restart.timeout),
            marker,
        );
        // The remote `timeout` stops the command; the local deadline only guards against a
        // connection that hangs.
        let deadline = restart.timeout + REMOTE_KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(host = %values.host, %command, "restart");
        let result = self
            .effects
            .run(Some(&values.host), &command, deadline)
            .await;
        if let Ok(output) = &result {
            tracing::debug!(output = %output.trim_end(), "restart output");
        }
        let shown = command_line(&restart.command, values);
        result
            .map(drop)
            .map_err(|error| command_failure(error.shown_as(&shown)))
    }

    /// Whether a command started earlier still runs, as its host shows it now.
    pub(super) async fn check_command(
        &self,
        started: &StartedCommand,
    ) -> Result<CommandState, String> {
        let state = self
            .effects
            .check(started.host.as_deref(), &started.marker)
            .await?;
        Ok(match state {
            Tracked::Running => CommandState::Running,
            Tracked::Ended => CommandState::Ended,
        })
    }

    /// Runs a hook of the server at `index`, over SSH on its host or here (`local`).
    /// What `verify` reads on the server at `index`: the URL's body (2xx) or the command's
    /// output (exit 0), whitespace trimmed. Reading changes nothing, so it is not journaled.
    pub(super) async fn read_verify(&self, index: usize) -> Result<String, String> {
        let Some(verify) = &self.plan.verify else {
            return Err("the plan has no verify".to_owned());
        };
        let values = &self.targets[index];
        let answer = match &verify.read {
            VerifyRead::Url(url) => {
                self.effects
                    .fetch(&health_url(url, values), verify.timeout)
                    .await
            }
            VerifyRead::Command(command) => {
                let line = remote_command(command, values, verify.timeout);
                let deadline = verify.timeout + REMOTE_KILL_AFTER + Duration::from_secs(5);
                self.effects
                    .run(Some(&values.host), &line, deadline)
                    .await
                    .map_err(|error| error.shown_as(&command_line(command, values)).to_string())
            }
        };
        answer.map(|text| text.trim().to_owned())
    }

    pub(super) async fn hook(&self, point: HookPoint, index: usize) -> Result<(), CommandFailure> {
        let Some(hook) = self.plan.hooks.get(point) else {
            return Ok(());
        };
        let values = &self.targets[index];
        let host = (!hook.local).then_some(values.host.as_str());
        let mut command = remote_command(&hook.command, values, hook.timeout);
        if let Some(change) = hook_change(point) {
            let marker = self.command_intent(index, change, host, hook.timeout)?;
            command = tracked_command(&command, &marker);
        }
        let deadline = hook.timeout + REMOTE_KILL_AFTER + Duration::from_secs(5);
        tracing::debug!(hook = point.as_str(), local = hook.local, %command, "hook");
        let result = self.effects.run(host, &command, deadline).await;
        if let Ok(output) = &result {
            tracing::debug!(output = %output.trim_end(), "hook output");
        }
        let shown = command_line(&hook.command, values);
        result
            .map(drop)
            .map_err(|error| command_failure(error.shown_as(&shown)))
    }
}
