import { LabIcon } from '@jupyterlab/ui-components';

/**
 * A hexagon (a node) holding a spark (a model): the Kaito sidebar's tab icon.
 *
 * `jp-icon3` makes the fill follow the light and dark themes.
 */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 1.5 21.1 6.75v10.5L12 22.5 2.9 17.25V6.75L12 1.5Zm0 2.31L4.9 7.9v8.2l7.1 4.09 7.1-4.09V7.9L12 3.81Z"/>
    <path d="m12 6.5 1.45 4.05L17.5 12l-4.05 1.45L12 17.5l-1.45-4.05L6.5 12l4.05-1.45L12 6.5Z"/>
  </g>
</svg>`;

export const kaitoIcon = new LabIcon({ name: 'kaito-jupyter:kaito', svgstr });
