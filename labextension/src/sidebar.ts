import { SidePanel } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { kaitoIcon } from './icon';

/**
 * The Kaito panel in the left sidebar.
 *
 * For now it only says what will live here; the workspace list, readiness conditions and GPU
 * nodes come with the server extension's API.
 */
export class KaitoSidebar extends SidePanel {
  constructor(version: string) {
    super();
    this.id = 'kaito-jupyter-sidebar';
    this.addClass('jp-KaitoSidebar');
    this.title.icon = kaitoIcon;
    this.title.caption = 'Kaito';

    const heading = new Widget({ node: document.createElement('h2') });
    heading.addClass('jp-KaitoSidebar-title');
    heading.node.textContent = 'Kaito';
    this.header.addWidget(heading);

    const body = document.createElement('div');
    const placeholder = document.createElement('p');
    placeholder.className = 'jp-KaitoSidebar-placeholder';
    placeholder.textContent = 'Kaito workspaces will be listed here.';
    const footer = document.createElement('p');
    footer.className = 'jp-KaitoSidebar-version';
    footer.textContent = `kaito-jupyter ${version}`;
    body.append(placeholder, footer);

    const content = new Widget({ node: body });
    content.addClass('jp-KaitoSidebar-content');
    this.addWidget(content);
  }
}
